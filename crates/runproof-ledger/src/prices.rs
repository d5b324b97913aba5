//! Price tables in LiteLLM's `model_prices_and_context_window.json` format
//! (USD per token), and the cost of a usage record.
//!
//! An unknown model has no price: `cost` returns `None`, never 0, so every
//! report can say loudly that a charge is unpriced.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Token counts of one request, each token counted once:
/// `input` excludes cached and cache-write tokens, `output` excludes
/// reasoning tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input + self.output + self.cache_read + self.cache_write + self.reasoning
    }
}

/// Per-token prices of one model, USD.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelPrice {
    pub input_cost_per_token: f64,
    pub output_cost_per_token: f64,
    /// Price of a cached input token; the input price when absent.
    pub cache_read_input_token_cost: Option<f64>,
    /// Price of writing a token to the cache; the input price when absent.
    pub cache_creation_input_token_cost: Option<f64>,
    /// Price of a reasoning token; the output price when absent.
    pub output_cost_per_reasoning_token: Option<f64>,
}

impl ModelPrice {
    /// USD cost of `u` at these prices.
    pub fn cost(&self, u: &Usage) -> f64 {
        let i = self.input_cost_per_token;
        let o = self.output_cost_per_token;
        u.input as f64 * i
            + u.cache_read as f64 * self.cache_read_input_token_cost.unwrap_or(i)
            + u.cache_write as f64 * self.cache_creation_input_token_cost.unwrap_or(i)
            + u.output as f64 * o
            + u.reasoning as f64 * self.output_cost_per_reasoning_token.unwrap_or(o)
    }
}

/// Price of sandbox compute (from the sandbox's cgroup accounting), USD. The
/// default is zero: compute is free unless the configuration prices it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ComputePrice {
    pub usd_per_cpu_second: f64,
    /// Per GiB of memory held for one second.
    pub usd_per_gib_second: f64,
}

impl ComputePrice {
    pub fn cost(&self, cpu_seconds: f64, mem_gib_seconds: f64) -> f64 {
        let c = cpu_seconds.max(0.0) * self.usd_per_cpu_second
            + mem_gib_seconds.max(0.0) * self.usd_per_gib_second;
        if c.is_finite() { c } else { 0.0 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    #[error("cannot read price file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "price file {path} is not a LiteLLM-style price table (a JSON object of model name to {{\"input_cost_per_token\": ..., \"output_cost_per_token\": ...}}): {msg}"
    )]
    Format { path: String, msg: String },
    #[error("price file {path}: model {model:?} has a negative or non-finite {field}")]
    BadNumber {
        path: String,
        model: String,
        field: &'static str,
    },
}

/// Model name to price.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    models: HashMap<String, ModelPrice>,
}

const BUNDLED: &str = include_str!("../data/prices.json");

impl PriceTable {
    /// The table shipped inside the binary.
    pub fn bundled() -> Self {
        Self::parse(BUNDLED, "<bundled prices.json>").expect("bundled price table is valid")
    }

    /// The bundled table overlaid with a user file (user entries win).
    pub fn bundled_with_file(path: Option<&Path>) -> Result<Self, PriceError> {
        let mut t = Self::bundled();
        if let Some(p) = path {
            t.merge(Self::load(p)?);
        }
        Ok(t)
    }

    pub fn load(path: &Path) -> Result<Self, PriceError> {
        let text = std::fs::read_to_string(path).map_err(|source| PriceError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse LiteLLM-format JSON. Entries that are not objects or carry no
    /// per-token input and output price (image models, `sample_spec`, comments)
    /// are skipped; a present but invalid number is an error.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PriceError> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| PriceError::Format {
            path: origin.to_string(),
            msg: e.to_string(),
        })?;
        let obj = v.as_object().ok_or_else(|| PriceError::Format {
            path: origin.to_string(),
            msg: "the top level is not a JSON object".into(),
        })?;
        let mut models = HashMap::new();
        for (name, entry) in obj {
            if name == "sample_spec" {
                continue;
            }
            let Some(e) = entry.as_object() else { continue };
            let num = |field: &'static str| -> Result<Option<f64>, PriceError> {
                match e.get(field) {
                    None | Some(serde_json::Value::Null) => Ok(None),
                    Some(x) => match x.as_f64() {
                        Some(n) if n.is_finite() && n >= 0.0 => Ok(Some(n)),
                        _ => Err(PriceError::BadNumber {
                            path: origin.to_string(),
                            model: name.clone(),
                            field,
                        }),
                    },
                }
            };
            let (Some(i), Some(o)) = (num("input_cost_per_token")?, num("output_cost_per_token")?)
            else {
                continue;
            };
            models.insert(
                name.clone(),
                ModelPrice {
                    input_cost_per_token: i,
                    output_cost_per_token: o,
                    cache_read_input_token_cost: num("cache_read_input_token_cost")?,
                    cache_creation_input_token_cost: num("cache_creation_input_token_cost")?,
                    output_cost_per_reasoning_token: num("output_cost_per_reasoning_token")?,
                },
            );
        }
        Ok(PriceTable { models })
    }

    pub fn merge(&mut self, other: PriceTable) {
        self.models.extend(other.models);
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Price of a model: exact name, then lower-case, then without a
    /// `provider/` prefix (`openai/gpt-4o`). No fuzzy matching: a near name is
    /// a different model and gets no price.
    pub fn get(&self, model: &str) -> Option<&ModelPrice> {
        if let Some(p) = self.models.get(model) {
            return Some(p);
        }
        let lower = model.to_ascii_lowercase();
        if let Some(p) = self.models.get(&lower) {
            return Some(p);
        }
        let (_, bare) = lower.split_once('/')?;
        self.models.get(bare)
    }

    /// Cost of `usage` for `model`, `None` when the model has no price.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        self.get(model).map(|p| p.cost(usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_table_prices_known_models_and_not_unknown_ones() {
        let t = PriceTable::bundled();
        assert!(t.len() >= 10);
        let u = Usage {
            input: 1_000_000,
            output: 0,
            ..Default::default()
        };
        assert!((t.cost("gpt-4o", &u).unwrap() - 2.5).abs() < 1e-9);
        assert!((t.cost("openai/GPT-4o", &u).unwrap() - 2.5).abs() < 1e-9);
        assert_eq!(t.cost("gpt-4o-turbo-imaginary", &u), None);
        // A zero-token request to an unknown model is still unknown, not 0.
        assert_eq!(t.cost("nope", &Usage::default()), None);
    }

    #[test]
    fn compute_is_priced_per_cpu_and_memory_second() {
        let p = ComputePrice {
            usd_per_cpu_second: 0.0001,
            usd_per_gib_second: 0.00001,
        };
        assert!((p.cost(100.0, 50.0) - 0.0105).abs() < 1e-12);
        assert_eq!(ComputePrice::default().cost(100.0, 100.0), 0.0);
        assert_eq!(p.cost(-5.0, 0.0), 0.0);
    }

    #[test]
    fn each_token_kind_at_its_own_rate() {
        let p = ModelPrice {
            input_cost_per_token: 3.0,
            output_cost_per_token: 15.0,
            cache_read_input_token_cost: Some(0.3),
            cache_creation_input_token_cost: Some(3.75),
            output_cost_per_reasoning_token: Some(20.0),
        };
        let u = Usage {
            input: 1,
            output: 2,
            cache_read: 10,
            cache_write: 4,
            reasoning: 3,
        };
        assert!((p.cost(&u) - (3.0 + 30.0 + 3.0 + 15.0 + 60.0)).abs() < 1e-9);
        let fallback = ModelPrice {
            cache_read_input_token_cost: None,
            cache_creation_input_token_cost: None,
            output_cost_per_reasoning_token: None,
            ..p
        };
        assert!((fallback.cost(&u) - (3.0 + 30.0 + 30.0 + 12.0 + 45.0)).abs() < 1e-9);
    }

    #[test]
    fn litellm_file_format_parses_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.json");
        std::fs::write(
            &f,
            r#"{"sample_spec": {"input_cost_per_token": "x"},
                "my-model": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, "max_tokens": 10},
                "gpt-4o": {"input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6},
                "dall-e": {"output_cost_per_image": 0.04}}"#,
        )
        .unwrap();
        let t = PriceTable::bundled_with_file(Some(&f)).unwrap();
        assert!(t.get("my-model").is_some());
        assert!(t.get("dall-e").is_none());
        assert_eq!(t.get("gpt-4o").unwrap().input_cost_per_token, 1e-6);
        std::fs::write(
            &f,
            r#"{"m": {"input_cost_per_token": -1, "output_cost_per_token": 1}}"#,
        )
        .unwrap();
        let e = PriceTable::load(&f).unwrap_err().to_string();
        assert!(
            e.contains("\"m\"") && e.contains("input_cost_per_token"),
            "{e}"
        );
        std::fs::write(&f, "[1,2]").unwrap();
        assert!(
            PriceTable::load(&f)
                .unwrap_err()
                .to_string()
                .contains("not a JSON object")
        );
        let missing = PriceTable::load(&dir.path().join("missing.json"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing.json"));
    }
}
