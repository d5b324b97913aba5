//! Reading token usage from OpenAI and Anthropic responses, whole or streamed.
//!
//! Every token is counted once, in the kind it is billed as
//! ([`runproof_ledger::Usage`]): OpenAI's `prompt_tokens` include cached
//! tokens and `completion_tokens` include reasoning tokens, so those are
//! subtracted out; Anthropic's `input_tokens` already exclude cache reads and
//! writes. Anthropic's `message_delta` usage holds running totals, so later
//! values replace earlier ones, never add to them.

use runproof_ledger::Usage;
use serde_json::Value;

/// Which API a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAiChat,
    OpenAiResponses,
    AnthropicMessages,
}

impl Api {
    pub fn provider(self) -> &'static str {
        match self {
            Api::OpenAiChat | Api::OpenAiResponses => "openai",
            Api::AnthropicMessages => "anthropic",
        }
    }
    pub fn endpoint(self) -> &'static str {
        match self {
            Api::OpenAiChat => "chat.completions",
            Api::OpenAiResponses => "responses",
            Api::AnthropicMessages => "messages",
        }
    }
}

fn n(v: &Value, path: &[&str]) -> Option<u64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_u64()
}

/// OpenAI chat-completions `usage` object.
pub fn openai_chat_usage(u: &Value) -> Option<Usage> {
    let prompt = n(u, &["prompt_tokens"])?;
    let completion = n(u, &["completion_tokens"])?;
    let cached = n(u, &["prompt_tokens_details", "cached_tokens"]).unwrap_or(0);
    let reasoning = n(u, &["completion_tokens_details", "reasoning_tokens"]).unwrap_or(0);
    Some(Usage {
        input: prompt.saturating_sub(cached),
        cache_read: cached.min(prompt),
        output: completion.saturating_sub(reasoning),
        reasoning: reasoning.min(completion),
        cache_write: 0,
    })
}

/// OpenAI responses `usage` object.
pub fn openai_responses_usage(u: &Value) -> Option<Usage> {
    let input = n(u, &["input_tokens"])?;
    let output = n(u, &["output_tokens"])?;
    let cached = n(u, &["input_tokens_details", "cached_tokens"]).unwrap_or(0);
    let reasoning = n(u, &["output_tokens_details", "reasoning_tokens"]).unwrap_or(0);
    Some(Usage {
        input: input.saturating_sub(cached),
        cache_read: cached.min(input),
        output: output.saturating_sub(reasoning),
        reasoning: reasoning.min(output),
        cache_write: 0,
    })
}

/// Anthropic usage fields present in `u`, as running totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnthropicTotals {
    pub input: Option<u64>,
    pub output: Option<u64>,
    pub cache_read: Option<u64>,
    pub cache_write: Option<u64>,
}

impl AnthropicTotals {
    pub fn read(u: &Value) -> Self {
        AnthropicTotals {
            input: n(u, &["input_tokens"]),
            output: n(u, &["output_tokens"]),
            cache_read: n(u, &["cache_read_input_tokens"]),
            cache_write: n(u, &["cache_creation_input_tokens"]),
        }
    }
    /// Later totals replace earlier ones field by field.
    pub fn update(&mut self, later: AnthropicTotals) {
        self.input = later.input.or(self.input);
        self.output = later.output.or(self.output);
        self.cache_read = later.cache_read.or(self.cache_read);
        self.cache_write = later.cache_write.or(self.cache_write);
    }
    pub fn usage(&self) -> Usage {
        Usage {
            input: self.input.unwrap_or(0),
            output: self.output.unwrap_or(0),
            cache_read: self.cache_read.unwrap_or(0),
            cache_write: self.cache_write.unwrap_or(0),
            reasoning: 0,
        }
    }
}

/// A response body decoded for its `usage` member only (the rest is skipped
/// without being built into values).
#[derive(Debug, serde::Deserialize)]
pub struct UsageOnly {
    #[serde(default)]
    pub usage: Option<Value>,
}

/// Usage of a whole (non-streamed) response body.
pub fn usage_of_body(api: Api, body: &UsageOnly) -> Option<Usage> {
    let u = body.usage.as_ref()?;
    match api {
        Api::OpenAiChat => openai_chat_usage(u),
        Api::OpenAiResponses => openai_responses_usage(u),
        Api::AnthropicMessages => {
            let t = AnthropicTotals::read(u);
            t.input.and(t.output).map(|_| t.usage())
        }
    }
}

/// Rough token count of text (about four bytes a token), for estimates only.
pub fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// What to do with one streamed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    /// The usage-only chunk the gateway asked for and the client did not.
    Strip,
}

/// Running account of one streamed response.
#[derive(Debug)]
pub struct StreamMeter {
    api: Api,
    strip_usage_chunk: bool,
    /// Input tokens estimated from the request, used until the upstream says.
    input_estimate: u64,
    /// Bytes of generated text seen so far (content, tool arguments, thinking).
    text_bytes: usize,
    /// Final usage from the upstream, once it arrived.
    final_usage: Option<Usage>,
    anthropic: AnthropicTotals,
    anthropic_started: bool,
    anthropic_delta_seen: bool,
    /// An `error` event or unparseable JSON was seen.
    pub saw_error: bool,
    pub malformed: bool,
}

impl StreamMeter {
    pub fn new(api: Api, strip_usage_chunk: bool, input_estimate: u64) -> Self {
        StreamMeter {
            api,
            strip_usage_chunk,
            input_estimate,
            text_bytes: 0,
            final_usage: None,
            anthropic: AnthropicTotals::default(),
            anthropic_started: false,
            anthropic_delta_seen: false,
            saw_error: false,
            malformed: false,
        }
    }

    /// Account for one raw event; say whether to forward it.
    pub fn observe(&mut self, raw: &[u8]) -> Verdict {
        let ev = super::sse::parse_event(raw);
        if ev.data.is_empty() || ev.data == "[DONE]" {
            return Verdict::Forward;
        }
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            self.malformed = true;
            return Verdict::Forward;
        };
        if ev.event.as_deref() == Some("error") || v.get("error").is_some_and(|e| !e.is_null()) {
            self.saw_error = true;
        }
        match self.api {
            Api::OpenAiChat => self.observe_chat(&v),
            Api::OpenAiResponses => {
                self.observe_responses(&v);
                Verdict::Forward
            }
            Api::AnthropicMessages => {
                self.observe_anthropic(&v);
                Verdict::Forward
            }
        }
    }

    fn text_of(v: Option<&Value>) -> usize {
        v.and_then(Value::as_str).map_or(0, str::len)
    }

    fn observe_chat(&mut self, v: &Value) -> Verdict {
        if let Some(choices) = v.get("choices").and_then(Value::as_array) {
            for c in choices {
                let d = c.get("delta");
                self.text_bytes += Self::text_of(d.and_then(|d| d.get("content")));
                self.text_bytes += Self::text_of(d.and_then(|d| d.get("reasoning_content")));
                self.text_bytes += Self::text_of(d.and_then(|d| d.get("refusal")));
                if let Some(calls) = d
                    .and_then(|d| d.get("tool_calls"))
                    .and_then(Value::as_array)
                {
                    for call in calls {
                        self.text_bytes +=
                            Self::text_of(call.get("function").and_then(|f| f.get("arguments")));
                    }
                }
            }
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object())
            && let Some(usage) = openai_chat_usage(u)
        {
            self.final_usage = Some(usage);
            let no_choices = v
                .get("choices")
                .and_then(Value::as_array)
                .is_none_or(|c| c.is_empty());
            if self.strip_usage_chunk && no_choices {
                return Verdict::Strip;
            }
        }
        Verdict::Forward
    }

    fn observe_responses(&mut self, v: &Value) {
        let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
        if ty.ends_with(".delta") {
            self.text_bytes += Self::text_of(v.get("delta"));
        }
        if matches!(
            ty,
            "response.completed" | "response.incomplete" | "response.failed"
        ) && let Some(u) = v
            .get("response")
            .and_then(|r| r.get("usage"))
            .filter(|u| u.is_object())
            && let Some(usage) = openai_responses_usage(u)
        {
            self.final_usage = Some(usage);
        }
        if ty == "error" || ty == "response.failed" {
            self.saw_error = true;
        }
    }

    fn observe_anthropic(&mut self, v: &Value) {
        match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                if let Some(u) = v.get("message").and_then(|m| m.get("usage")) {
                    self.anthropic.update(AnthropicTotals::read(u));
                    self.anthropic_started = true;
                }
            }
            "message_delta" => {
                if let Some(u) = v.get("usage") {
                    self.anthropic.update(AnthropicTotals::read(u));
                    self.anthropic_delta_seen = true;
                }
            }
            "content_block_delta" => {
                let d = v.get("delta");
                for key in ["text", "partial_json", "thinking"] {
                    self.text_bytes += Self::text_of(d.and_then(|d| d.get(key)));
                }
            }
            "error" => self.saw_error = true,
            _ => {}
        }
        if self.anthropic_started && self.anthropic_delta_seen {
            self.final_usage = Some(self.anthropic.usage());
        }
    }

    /// The upstream's own final numbers, if they arrived.
    pub fn final_usage(&self) -> Option<Usage> {
        self.final_usage
    }

    /// Usage so far: the final numbers if known, else the best estimate from
    /// what was seen (exact input when Anthropic's `message_start` gave it).
    pub fn usage_so_far(&self) -> (Usage, bool) {
        if let Some(u) = self.final_usage {
            return (u, false);
        }
        let seen_out = estimate_tokens(self.text_bytes);
        let u = match self.api {
            Api::AnthropicMessages if self.anthropic_started => {
                let mut u = self.anthropic.usage();
                u.output = u.output.max(seen_out);
                u
            }
            _ => Usage {
                input: self.input_estimate,
                output: seen_out,
                ..Usage::default()
            },
        };
        (u, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_chat_usage_splits_cached_and_reasoning() {
        let u = json!({"prompt_tokens": 1000, "completion_tokens": 300, "total_tokens": 1300,
            "prompt_tokens_details": {"cached_tokens": 600, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 200}});
        assert_eq!(
            openai_chat_usage(&u),
            Some(Usage {
                input: 400,
                cache_read: 600,
                output: 100,
                reasoning: 200,
                cache_write: 0
            })
        );
        assert_eq!(openai_chat_usage(&json!({"prompt_tokens": 1})), None);
    }

    #[test]
    fn anthropic_delta_totals_replace_not_add() {
        let mut m = StreamMeter::new(Api::AnthropicMessages, false, 0);
        m.observe(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":10,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n");
        assert_eq!(m.final_usage(), None);
        m.observe(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n");
        m.observe(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":40}}\n\n");
        assert_eq!(
            m.final_usage(),
            Some(Usage {
                input: 25,
                cache_write: 10,
                cache_read: 5,
                output: 40,
                reasoning: 0
            })
        );
    }

    #[test]
    fn chat_usage_chunk_stripped_only_when_injected() {
        let chunk = b"data: {\"id\":\"x\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n";
        let mut m = StreamMeter::new(Api::OpenAiChat, true, 0);
        assert_eq!(m.observe(chunk), Verdict::Strip);
        assert_eq!(m.final_usage().unwrap().output, 2);
        let mut m = StreamMeter::new(Api::OpenAiChat, false, 0);
        assert_eq!(m.observe(chunk), Verdict::Forward);
    }

    #[test]
    fn cut_stream_estimates_from_text_seen() {
        let mut m = StreamMeter::new(Api::OpenAiChat, true, 50);
        m.observe(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"12345678\"}}],\"usage\":null}\n\n",
        );
        let (u, est) = m.usage_so_far();
        assert!(est);
        assert_eq!((u.input, u.output), (50, 2));
        m.observe(b"data: not json\n\n");
        assert!(m.malformed);
    }
}
