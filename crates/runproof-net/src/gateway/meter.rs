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
    /// The upstream's path for it.
    pub fn path(self) -> &'static str {
        match self {
            Api::OpenAiChat => "/v1/chat/completions",
            Api::OpenAiResponses => "/v1/responses",
            Api::AnthropicMessages => "/v1/messages",
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

/// One JSON value read for a scalar, without building a [`Value`]: strings,
/// booleans and non-negative integers are kept; anything else (floats,
/// negative numbers, null, and arrays and objects, skipped unread) is
/// `Other`. So a field of an unexpected type reads as absent, exactly as
/// `Value::as_str`, `as_bool` and `as_u64` read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scalar {
    Str(String),
    Bool(bool),
    U64(u64),
    Other,
}

impl Scalar {
    pub(crate) fn as_bool(&self) -> Option<bool> {
        match self {
            Scalar::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub(crate) fn as_u64(&self) -> Option<u64> {
        match self {
            Scalar::U64(n) => Some(*n),
            _ => None,
        }
    }
}

struct ScalarVisitor;

impl<'de> serde::de::Visitor<'de> for ScalarVisitor {
    type Value = Scalar;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::U64(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
        Ok(u64::try_from(v).map_or(Scalar::Other, Scalar::U64))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_none<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(Scalar::Other)
    }
}

impl<'de> serde::Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

/// The numbers in a `usage` object that any of the three APIs bills by.
/// Each is what `Value` lookups would give (`None` when absent or not a
/// non-negative integer; of duplicate keys the last wins, as in a decoded
/// `Value`), but read straight from the text: nothing else in the object is
/// built, unknown members are skipped unread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageNumbers {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// `prompt_tokens_details.cached_tokens`
    pub prompt_cached: Option<u64>,
    /// `completion_tokens_details.reasoning_tokens`
    pub completion_reasoning: Option<u64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// `input_tokens_details.cached_tokens`
    pub input_cached: Option<u64>,
    /// `output_tokens_details.reasoning_tokens`
    pub output_reasoning: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
}

impl UsageNumbers {
    /// The same numbers from an already decoded value.
    pub fn from_value(u: &Value) -> Self {
        UsageNumbers {
            prompt_tokens: n(u, &["prompt_tokens"]),
            completion_tokens: n(u, &["completion_tokens"]),
            prompt_cached: n(u, &["prompt_tokens_details", "cached_tokens"]),
            completion_reasoning: n(u, &["completion_tokens_details", "reasoning_tokens"]),
            input_tokens: n(u, &["input_tokens"]),
            output_tokens: n(u, &["output_tokens"]),
            input_cached: n(u, &["input_tokens_details", "cached_tokens"]),
            output_reasoning: n(u, &["output_tokens_details", "reasoning_tokens"]),
            cache_read_input_tokens: n(u, &["cache_read_input_tokens"]),
            cache_creation_input_tokens: n(u, &["cache_creation_input_tokens"]),
        }
    }

    /// OpenAI chat-completions usage.
    pub fn openai_chat(&self) -> Option<Usage> {
        let prompt = self.prompt_tokens?;
        let completion = self.completion_tokens?;
        let cached = self.prompt_cached.unwrap_or(0);
        let reasoning = self.completion_reasoning.unwrap_or(0);
        Some(Usage {
            input: prompt.saturating_sub(cached),
            cache_read: cached.min(prompt),
            output: completion.saturating_sub(reasoning),
            reasoning: reasoning.min(completion),
            cache_write: 0,
        })
    }

    /// OpenAI responses usage.
    pub fn openai_responses(&self) -> Option<Usage> {
        let input = self.input_tokens?;
        let output = self.output_tokens?;
        let cached = self.input_cached.unwrap_or(0);
        let reasoning = self.output_reasoning.unwrap_or(0);
        Some(Usage {
            input: input.saturating_sub(cached),
            cache_read: cached.min(input),
            output: output.saturating_sub(reasoning),
            reasoning: reasoning.min(output),
            cache_write: 0,
        })
    }

    /// Anthropic usage fields present, as running totals.
    pub fn anthropic(&self) -> AnthropicTotals {
        AnthropicTotals {
            input: self.input_tokens,
            output: self.output_tokens,
            cache_read: self.cache_read_input_tokens,
            cache_write: self.cache_creation_input_tokens,
        }
    }
}

/// Reads a `*_details` object for one member; `None` unless it is an object
/// holding that member as a non-negative integer.
struct DetailVisitor(&'static str);

impl<'de> serde::de::Visitor<'de> for DetailVisitor {
    type Value = Option<u64>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Option<u64>, A::Error> {
        let mut found = None;
        while let Some(k) = map.next_key::<Key<'de>>()? {
            if *k.0 == *self.0 {
                found = map.next_value::<Scalar>()?.as_u64();
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Option<u64>, A::Error> {
        ScalarVisitor.visit_seq(seq).map(|_| None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Option<u64>, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Option<u64>, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Option<u64>, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Option<u64>, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Option<u64>, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<u64>, E> {
        Ok(None)
    }
}

struct Detail(&'static str);

impl<'de> serde::de::DeserializeSeed<'de> for Detail {
    type Value = Option<u64>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_any(DetailVisitor(self.0))
    }
}

/// An object key, borrowed from the input unless it had escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key<'de>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

struct UsageVisitor;

impl<'de> serde::de::Visitor<'de> for UsageVisitor {
    type Value = UsageNumbers;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UsageNumbers, A::Error> {
        let mut u = UsageNumbers::default();
        while let Some(k) = map.next_key::<Key<'de>>()? {
            let num = |m: &mut A| m.next_value::<Scalar>().map(|s| s.as_u64());
            match &*k.0 {
                "prompt_tokens" => u.prompt_tokens = num(&mut map)?,
                "completion_tokens" => u.completion_tokens = num(&mut map)?,
                "input_tokens" => u.input_tokens = num(&mut map)?,
                "output_tokens" => u.output_tokens = num(&mut map)?,
                "cache_read_input_tokens" => u.cache_read_input_tokens = num(&mut map)?,
                "cache_creation_input_tokens" => u.cache_creation_input_tokens = num(&mut map)?,
                "prompt_tokens_details" => {
                    u.prompt_cached = map.next_value_seed(Detail("cached_tokens"))?
                }
                "completion_tokens_details" => {
                    u.completion_reasoning = map.next_value_seed(Detail("reasoning_tokens"))?
                }
                "input_tokens_details" => {
                    u.input_cached = map.next_value_seed(Detail("cached_tokens"))?
                }
                "output_tokens_details" => {
                    u.output_reasoning = map.next_value_seed(Detail("reasoning_tokens"))?
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(u)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<UsageNumbers, A::Error> {
        ScalarVisitor
            .visit_seq(seq)
            .map(|_| UsageNumbers::default())
    }
    fn visit_str<E>(self, _: &str) -> Result<UsageNumbers, E> {
        Ok(UsageNumbers::default())
    }
    fn visit_bool<E>(self, _: bool) -> Result<UsageNumbers, E> {
        Ok(UsageNumbers::default())
    }
    fn visit_u64<E>(self, _: u64) -> Result<UsageNumbers, E> {
        Ok(UsageNumbers::default())
    }
    fn visit_i64<E>(self, _: i64) -> Result<UsageNumbers, E> {
        Ok(UsageNumbers::default())
    }
    fn visit_f64<E>(self, _: f64) -> Result<UsageNumbers, E> {
        Ok(UsageNumbers::default())
    }
    fn visit_unit<E>(self) -> Result<UsageNumbers, E> {
        Ok(UsageNumbers::default())
    }
}

impl<'de> serde::Deserialize<'de> for UsageNumbers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<UsageNumbers, D::Error> {
        d.deserialize_any(UsageVisitor)
    }
}

/// OpenAI chat-completions `usage` object.
pub fn openai_chat_usage(u: &Value) -> Option<Usage> {
    UsageNumbers::from_value(u).openai_chat()
}

/// OpenAI responses `usage` object.
pub fn openai_responses_usage(u: &Value) -> Option<Usage> {
    UsageNumbers::from_value(u).openai_responses()
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
        UsageNumbers::from_value(u).anthropic()
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
    pub usage: Option<UsageNumbers>,
}

/// Usage of a whole (non-streamed) response body.
pub fn usage_of_body(api: Api, body: &UsageOnly) -> Option<Usage> {
    let u = body.usage.as_ref()?;
    match api {
        Api::OpenAiChat => u.openai_chat(),
        Api::OpenAiResponses => u.openai_responses(),
        Api::AnthropicMessages => {
            let t = u.anthropic();
            t.input.and(t.output).map(|_| t.usage())
        }
    }
}

/// A JSON value read as an object by `R`; any other value (skipped
/// unread) gives `R::Out::default()`, as lookups into a non-object give
/// nothing.
struct AsObject<R>(R);

/// Reads the members of one object.
trait ObjectReader<'de> {
    type Out: Default;
    fn read<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Out, A::Error>;
}

/// A JSON value read as an array by `R`, or `None` for any other value.
struct AsArray<R>(R);

/// Reads the elements of one array.
trait ArrayReader<'de> {
    type Out;
    fn read<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Out, A::Error>;
}

/// The scalar and container methods every lenient visitor shares: each
/// value it does not expect is skipped and gives `$default`.
macro_rules! lenient_scalars {
    ($out:ty, $default:expr) => {
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<$out, E> {
            Ok($default)
        }
        fn visit_u64<E>(self, _: u64) -> Result<$out, E> {
            Ok($default)
        }
        fn visit_i64<E>(self, _: i64) -> Result<$out, E> {
            Ok($default)
        }
        fn visit_f64<E>(self, _: f64) -> Result<$out, E> {
            Ok($default)
        }
        fn visit_unit<E>(self) -> Result<$out, E> {
            Ok($default)
        }
    };
}

impl<'de, R: ObjectReader<'de>> serde::de::Visitor<'de> for AsObject<R> {
    type Value = R::Out;
    lenient_scalars!(R::Out, R::Out::default());
    fn visit_str<E>(self, _: &str) -> Result<R::Out, E> {
        Ok(R::Out::default())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<R::Out, A::Error> {
        ScalarVisitor.visit_seq(seq).map(|_| R::Out::default())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<R::Out, A::Error> {
        self.0.read(map)
    }
}

impl<'de, R: ObjectReader<'de>> serde::de::DeserializeSeed<'de> for AsObject<R> {
    type Value = R::Out;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<R::Out, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, R: ArrayReader<'de>> serde::de::Visitor<'de> for AsArray<R> {
    type Value = Option<R::Out>;
    lenient_scalars!(Option<R::Out>, None);
    fn visit_str<E>(self, _: &str) -> Result<Option<R::Out>, E> {
        Ok(None)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Option<R::Out>, A::Error> {
        self.0.read(seq).map(Some)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Option<R::Out>, A::Error> {
        ScalarVisitor.visit_map(map).map(|_| None)
    }
}

impl<'de, R: ArrayReader<'de>> serde::de::DeserializeSeed<'de> for AsArray<R> {
    type Value = Option<R::Out>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<R::Out>, D::Error> {
        d.deserialize_any(self)
    }
}

/// The length of a string value (as decoded), `None` for any other value.
struct StrLen;

impl<'de> serde::de::Visitor<'de> for StrLen {
    type Value = Option<usize>;
    lenient_scalars!(Option<usize>, None);
    fn visit_str<E>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(Some(v.len()))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Option<usize>, A::Error> {
        ScalarVisitor.visit_seq(seq).map(|_| None)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Option<usize>, A::Error> {
        ScalarVisitor.visit_map(map).map(|_| None)
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for StrLen {
    type Value = Option<usize>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_any(self)
    }
}

/// A string value, borrowed from the input where it has no escapes;
/// `None` for any other value.
struct StrValue;

impl<'de> serde::de::Visitor<'de> for StrValue {
    type Value = Option<std::borrow::Cow<'de, str>>;
    lenient_scalars!(Option<std::borrow::Cow<'de, str>>, None);
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(std::borrow::Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(std::borrow::Cow::Owned(v.to_owned())))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        ScalarVisitor.visit_seq(seq).map(|_| None)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        ScalarVisitor.visit_map(map).map(|_| None)
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for StrValue {
    type Value = Option<std::borrow::Cow<'de, str>>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// A `usage` member: whether it is an object, and its numbers.
struct UsageCapture;

impl<'de> serde::de::Visitor<'de> for UsageCapture {
    type Value = (bool, UsageNumbers);
    lenient_scalars!((bool, UsageNumbers), (false, UsageNumbers::default()));
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok((false, UsageNumbers::default()))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        ScalarVisitor
            .visit_seq(seq)
            .map(|_| (false, UsageNumbers::default()))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        UsageVisitor.visit_map(map).map(|u| (true, u))
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for UsageCapture {
    type Value = (bool, UsageNumbers);
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// `{"arguments": "..."}` of a tool call's `function`: the length.
struct FunctionArgs;

impl<'de> ObjectReader<'de> for FunctionArgs {
    type Out = usize;
    fn read<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let mut args = None;
        while let Some(k) = map.next_key::<Key<'de>>()? {
            if *k.0 == *"arguments" {
                args = map.next_value_seed(StrLen)?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(args.unwrap_or(0))
    }
}

/// One element of `tool_calls`: its `function.arguments` length.
#[derive(Clone, Copy)]
struct ToolCall;

impl<'de> ObjectReader<'de> for ToolCall {
    type Out = usize;
    fn read<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while let Some(k) = map.next_key::<Key<'de>>()? {
            if *k.0 == *"function" {
                n = map.next_value_seed(AsObject(FunctionArgs))?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(n)
    }
}

/// An array whose object elements are each read by `R`; the sum and count.
struct SumOf<R>(R);

impl<'de, R: ObjectReader<'de, Out = usize> + Copy> ArrayReader<'de> for SumOf<R> {
    type Out = (usize, usize);
    fn read<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(usize, usize), A::Error> {
        let (mut sum, mut count) = (0, 0);
        while let Some(n) = seq.next_element_seed(AsObject(self.0))? {
            sum += n;
            count += 1;
        }
        Ok((sum, count))
    }
}

/// A chat choice's `delta`: bytes of generated text in it.
struct ChatDelta;

impl<'de> ObjectReader<'de> for ChatDelta {
    type Out = usize;
    fn read<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let (mut content, mut reasoning, mut refusal, mut tools) = (None, None, None, None);
        while let Some(k) = map.next_key::<Key<'de>>()? {
            match &*k.0 {
                "content" => content = map.next_value_seed(StrLen)?,
                "reasoning_content" => reasoning = map.next_value_seed(StrLen)?,
                "refusal" => refusal = map.next_value_seed(StrLen)?,
                "tool_calls" => tools = map.next_value_seed(AsArray(SumOf(ToolCall)))?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(content.unwrap_or(0)
            + reasoning.unwrap_or(0)
            + refusal.unwrap_or(0)
            + tools.map_or(0, |(sum, _)| sum))
    }
}

/// One element of `choices`: the text bytes of its `delta`.
#[derive(Clone, Copy)]
struct Choice;

impl<'de> ObjectReader<'de> for Choice {
    type Out = usize;
    fn read<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while let Some(k) = map.next_key::<Key<'de>>()? {
            if *k.0 == *"delta" {
                n = map.next_value_seed(AsObject(ChatDelta))?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(n)
    }
}

/// A top-level `delta`: a string (responses) or an object (Anthropic).
struct TopDelta;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct TopDeltaOut {
    /// Length when `delta` is a string.
    as_str: Option<usize>,
    /// Lengths of `text`, `partial_json` and `thinking` when it is an object.
    text: usize,
}

impl<'de> serde::de::Visitor<'de> for TopDelta {
    type Value = TopDeltaOut;
    lenient_scalars!(TopDeltaOut, TopDeltaOut::default());
    fn visit_str<E>(self, v: &str) -> Result<TopDeltaOut, E> {
        Ok(TopDeltaOut {
            as_str: Some(v.len()),
            text: 0,
        })
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<TopDeltaOut, A::Error> {
        ScalarVisitor.visit_seq(seq).map(|_| TopDeltaOut::default())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<TopDeltaOut, A::Error> {
        let (mut text, mut json, mut thinking) = (None, None, None);
        while let Some(k) = map.next_key::<Key<'de>>()? {
            match &*k.0 {
                "text" => text = map.next_value_seed(StrLen)?,
                "partial_json" => json = map.next_value_seed(StrLen)?,
                "thinking" => thinking = map.next_value_seed(StrLen)?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(TopDeltaOut {
            as_str: None,
            text: text.unwrap_or(0) + json.unwrap_or(0) + thinking.unwrap_or(0),
        })
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for TopDelta {
    type Value = TopDeltaOut;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<TopDeltaOut, D::Error> {
        d.deserialize_any(self)
    }
}

/// An object's `usage` member (`response.usage`, `message.usage`), if present.
struct UsageMember;

impl<'de> ObjectReader<'de> for UsageMember {
    type Out = Option<(bool, UsageNumbers)>;
    fn read<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Out, A::Error> {
        let mut u = None;
        while let Some(k) = map.next_key::<Key<'de>>()? {
            if *k.0 == *"usage" {
                u = Some(map.next_value_seed(UsageCapture)?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(u)
    }
}

/// What the meter reads from one streamed event's JSON, in one pass and
/// without building values. Each member is what lookups into the decoded
/// event would give: the last of duplicate keys wins, a member of another
/// type than expected is absent, anything else is skipped unread.
#[derive(Debug, Default, PartialEq)]
struct EventFields<'a> {
    /// `error` is present and not null.
    error: bool,
    /// `type`, when a string.
    ty: Option<std::borrow::Cow<'a, str>>,
    /// `choices`, when an array: (text bytes of the deltas, number of choices).
    choices: Option<(usize, usize)>,
    /// `usage`, when present: (is an object, its numbers).
    usage: Option<(bool, UsageNumbers)>,
    delta: TopDeltaOut,
    /// `response.usage`, when `response` is an object that has it.
    response_usage: Option<(bool, UsageNumbers)>,
    /// `message.usage`, when `message` is an object that has it.
    message_usage: Option<(bool, UsageNumbers)>,
}

struct EventReader;

impl<'de> ObjectReader<'de> for EventReader {
    type Out = EventFields<'de>;
    fn read<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<EventFields<'de>, A::Error> {
        let mut f = EventFields::default();
        while let Some(k) = map.next_key::<Key<'de>>()? {
            match &*k.0 {
                "error" => f.error = map.next_value::<Option<serde::de::IgnoredAny>>()?.is_some(),
                "type" => f.ty = map.next_value_seed(StrValue)?,
                "choices" => f.choices = map.next_value_seed(AsArray(SumOf(Choice)))?,
                "usage" => f.usage = Some(map.next_value_seed(UsageCapture)?),
                "delta" => f.delta = map.next_value_seed(TopDelta)?,
                "response" => f.response_usage = map.next_value_seed(AsObject(UsageMember))?,
                "message" => f.message_usage = map.next_value_seed(AsObject(UsageMember))?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(f)
    }
}

impl<'de> serde::Deserialize<'de> for EventFields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EventFields<'de>, D::Error> {
        d.deserialize_any(AsObject(EventReader))
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
#[derive(Debug, Clone, PartialEq)]
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
        let Ok(v) = serde_json::from_str::<EventFields>(&ev.data) else {
            self.malformed = true;
            return Verdict::Forward;
        };
        if ev.event.as_deref() == Some("error") || v.error {
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

    fn observe_chat(&mut self, v: &EventFields) -> Verdict {
        if let Some((text, _)) = v.choices {
            self.text_bytes += text;
        }
        if let Some((true, u)) = v.usage
            && let Some(usage) = u.openai_chat()
        {
            self.final_usage = Some(usage);
            let no_choices = v.choices.is_none_or(|(_, n)| n == 0);
            if self.strip_usage_chunk && no_choices {
                return Verdict::Strip;
            }
        }
        Verdict::Forward
    }

    fn observe_responses(&mut self, v: &EventFields) {
        let ty = v.ty.as_deref().unwrap_or("");
        if ty.ends_with(".delta") {
            self.text_bytes += v.delta.as_str.unwrap_or(0);
        }
        if matches!(
            ty,
            "response.completed" | "response.incomplete" | "response.failed"
        ) && let Some((true, u)) = v.response_usage
            && let Some(usage) = u.openai_responses()
        {
            self.final_usage = Some(usage);
        }
        if ty == "error" || ty == "response.failed" {
            self.saw_error = true;
        }
    }

    fn observe_anthropic(&mut self, v: &EventFields) {
        match v.ty.as_deref().unwrap_or("") {
            "message_start" => {
                if let Some((_, u)) = v.message_usage {
                    self.anthropic.update(u.anthropic());
                    self.anthropic_started = true;
                }
            }
            "message_delta" => {
                if let Some((_, u)) = v.usage {
                    self.anthropic.update(u.anthropic());
                    self.anthropic_delta_seen = true;
                }
            }
            "content_block_delta" => self.text_bytes += v.delta.text,
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
    fn usage_read_from_text_equals_usage_read_from_values() {
        let cases = [
            r#"{"prompt_tokens": 1000, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 600, "audio_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 200}}"#,
            r#"{"input_tokens": 100, "input_tokens_details": {"cached_tokens": 60}, "output_tokens": 50, "output_tokens_details": {"reasoning_tokens": 20}, "total_tokens": 150}"#,
            r#"{"input_tokens": 10, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 30, "output_tokens": 40, "server_tool_use": {"web_search_requests": [1, {"a": 2}]}}"#,
            // Duplicate keys: the last one counts, nested objects too.
            r#"{"prompt_tokens": 1, "prompt_tokens": 7, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 5}, "prompt_tokens_details": {"audio_tokens": 1}}"#,
            r#"{"prompt_tokens_details": {"cached_tokens": 5, "cached_tokens": 3}, "prompt_tokens": 9, "completion_tokens": 1}"#,
            // Wrong types read as absent.
            r#"{"prompt_tokens": 12.0, "completion_tokens": -3, "prompt_tokens_details": 4, "completion_tokens_details": [1]}"#,
            r#"{"prompt_tokens": "12", "completion_tokens": null, "prompt_tokens_details": null, "input_tokens": true}"#,
            r#"{"prompt_tokens": 18446744073709551615, "completion_tokens": 18446744073709551616}"#,
            // Escaped keys are the same keys.
            r#"{"prompt\u005ftokens": 4, "completion_tokens": 2, "prompt_tokens_details": {"cached\u005ftokens": 1}}"#,
            r#"{}"#,
            r#"[1, 2]"#,
            r#"17"#,
            r#""usage""#,
        ];
        for c in cases {
            let value: Value = serde_json::from_str(c).unwrap();
            let read: UsageNumbers = serde_json::from_str(c).unwrap();
            assert_eq!(read, UsageNumbers::from_value(&value), "{c}");
            let body = format!(r#"{{"id": "x", "usage": {c}, "choices": [{{"usage": 1}}]}}"#);
            let typed: UsageOnly = serde_json::from_str(&body).unwrap();
            for api in [
                Api::OpenAiChat,
                Api::OpenAiResponses,
                Api::AnthropicMessages,
            ] {
                let from_value = match api {
                    Api::OpenAiChat => openai_chat_usage(&value),
                    Api::OpenAiResponses => openai_responses_usage(&value),
                    Api::AnthropicMessages => {
                        let t = AnthropicTotals::read(&value);
                        t.input.and(t.output).map(|_| t.usage())
                    }
                };
                assert_eq!(usage_of_body(api, &typed), from_value, "{api:?} {c}");
            }
        }
        let none: UsageOnly = serde_json::from_str(r#"{"usage": null}"#).unwrap();
        assert_eq!(usage_of_body(Api::OpenAiChat, &none), None);
        assert!(serde_json::from_str::<UsageOnly>(r#"{"usage": {}, "usage": {}}"#).is_err());
    }

    #[test]
    fn scalars_read_as_value_accessors_read_them() {
        for c in [
            r#""gpt-4o""#,
            r#""a\"b\u00e9""#,
            "true",
            "false",
            "0",
            "42",
            "-1",
            "1.5",
            "null",
            "[1, [2]]",
            r#"{"a": {"b": 1}}"#,
        ] {
            let v: Value = serde_json::from_str(c).unwrap();
            let s: Scalar = serde_json::from_str(c).unwrap();
            assert_eq!(s.as_u64(), v.as_u64(), "{c}");
            assert_eq!(s.as_bool(), v.as_bool(), "{c}");
            let as_str = match &s {
                Scalar::Str(x) => Some(x.as_str()),
                _ => None,
            };
            assert_eq!(as_str, v.as_str(), "{c}");
        }
    }

    /// The meter as it was when every event was decoded into a `Value`:
    /// the reference the one-pass reader is checked against.
    mod reference {
        use super::super::*;

        pub(super) fn observe(m: &mut StreamMeter, raw: &[u8]) -> Verdict {
            let ev = crate::gateway::sse::parse_event(raw);
            if ev.data.is_empty() || ev.data == "[DONE]" {
                return Verdict::Forward;
            }
            let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
                m.malformed = true;
                return Verdict::Forward;
            };
            if ev.event.as_deref() == Some("error") || v.get("error").is_some_and(|e| !e.is_null())
            {
                m.saw_error = true;
            }
            match m.api {
                Api::OpenAiChat => observe_chat(m, &v),
                Api::OpenAiResponses => {
                    observe_responses(m, &v);
                    Verdict::Forward
                }
                Api::AnthropicMessages => {
                    observe_anthropic(m, &v);
                    Verdict::Forward
                }
            }
        }

        fn text_of(v: Option<&Value>) -> usize {
            v.and_then(Value::as_str).map_or(0, str::len)
        }

        fn observe_chat(m: &mut StreamMeter, v: &Value) -> Verdict {
            if let Some(choices) = v.get("choices").and_then(Value::as_array) {
                for c in choices {
                    let d = c.get("delta");
                    m.text_bytes += text_of(d.and_then(|d| d.get("content")));
                    m.text_bytes += text_of(d.and_then(|d| d.get("reasoning_content")));
                    m.text_bytes += text_of(d.and_then(|d| d.get("refusal")));
                    if let Some(calls) = d
                        .and_then(|d| d.get("tool_calls"))
                        .and_then(Value::as_array)
                    {
                        for call in calls {
                            m.text_bytes +=
                                text_of(call.get("function").and_then(|f| f.get("arguments")));
                        }
                    }
                }
            }
            if let Some(u) = v.get("usage").filter(|u| u.is_object())
                && let Some(usage) = openai_chat_usage(u)
            {
                m.final_usage = Some(usage);
                let no_choices = v
                    .get("choices")
                    .and_then(Value::as_array)
                    .is_none_or(|c| c.is_empty());
                if m.strip_usage_chunk && no_choices {
                    return Verdict::Strip;
                }
            }
            Verdict::Forward
        }

        fn observe_responses(m: &mut StreamMeter, v: &Value) {
            let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
            if ty.ends_with(".delta") {
                m.text_bytes += text_of(v.get("delta"));
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
                m.final_usage = Some(usage);
            }
            if ty == "error" || ty == "response.failed" {
                m.saw_error = true;
            }
        }

        fn observe_anthropic(m: &mut StreamMeter, v: &Value) {
            match v.get("type").and_then(Value::as_str).unwrap_or("") {
                "message_start" => {
                    if let Some(u) = v.get("message").and_then(|m| m.get("usage")) {
                        m.anthropic.update(AnthropicTotals::read(u));
                        m.anthropic_started = true;
                    }
                }
                "message_delta" => {
                    if let Some(u) = v.get("usage") {
                        m.anthropic.update(AnthropicTotals::read(u));
                        m.anthropic_delta_seen = true;
                    }
                }
                "content_block_delta" => {
                    let d = v.get("delta");
                    for key in ["text", "partial_json", "thinking"] {
                        m.text_bytes += text_of(d.and_then(|d| d.get(key)));
                    }
                }
                "error" => m.saw_error = true,
                _ => {}
            }
            if m.anthropic_started && m.anthropic_delta_seen {
                m.final_usage = Some(m.anthropic.usage());
            }
        }
    }

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[(self.next() % xs.len() as u64) as usize]
        }
    }

    #[test]
    fn one_pass_reader_meters_exactly_as_decoding_into_values_did() {
        let members: &[&str] = &[
            r#""error": null"#,
            r#""error": {"type": "overloaded_error", "message": "x"}"#,
            r#""error": 5"#,
            r#""type": "message_start""#,
            r#""type": "message_delta""#,
            r#""type": "content_block_delta""#,
            r#""type": "error""#,
            r#""type": "response.completed""#,
            r#""type": "response.incomplete""#,
            r#""type": "response.failed""#,
            r#""type": "response.output_text.delta""#,
            r#""type": "response.reasoning_summary_text.delta""#,
            r#""type": 7"#,
            r#""type": null"#,
            r#""t\u0079pe": "message_delta""#,
            r#""choices": []"#,
            r#""choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": null}]"#,
            r#""choices": [{"delta": {"content": "a", "content": "b\"cd\u00e9", "reasoning_content": "xy", "refusal": null, "tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{\"a\":1}"}}, {"function": 5}, {"x": 1}, 3]}}, 3, "s", null]"#,
            r#""choices": [{"delta": "str"}, {"delta": {"refusal": "no", "tool_calls": {"function": {"arguments": "zz"}}}}]"#,
            r#""choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]"#,
            r#""choices": 5"#,
            r#""choices": {"0": {"delta": {"content": "x"}}}"#,
            r#""usage": null"#,
            r#""usage": {"prompt_tokens": 1200, "completion_tokens": 340, "total_tokens": 1540, "prompt_tokens_details": {"cached_tokens": 1024}, "completion_tokens_details": {"reasoning_tokens": 300}}"#,
            r#""usage": {"prompt_tokens": 3, "completion_tokens": 2}"#,
            r#""usage": {"input_tokens": 3, "output_tokens": 9, "cache_read_input_tokens": 2, "cache_creation_input_tokens": 4}"#,
            r#""usage": {"output_tokens": 40}"#,
            r#""usage": {"output_tokens": 15, "output_tokens": 41}"#,
            r#""usage": {"prompt_tokens": 1.5, "completion_tokens": -2}"#,
            r#""usage": 5"#,
            r#""usage": []"#,
            r#""\u0075sage": {"prompt_tokens": 7, "completion_tokens": 1}"#,
            r#""delta": "some text""#,
            r#""delta": {"type": "text_delta", "text": "Hi"}"#,
            r#""delta": {"text": "ab", "partial_json": "{}", "thinking": "hmm", "text": "abc"}"#,
            r#""delta": {"stop_reason": "end_turn", "stop_sequence": null}"#,
            r#""delta": 5"#,
            r#""delta": null"#,
            r#""response": {"id": "r", "usage": {"input_tokens": 100, "input_tokens_details": {"cached_tokens": 60}, "output_tokens": 50, "output_tokens_details": {"reasoning_tokens": 20}}}"#,
            r#""response": {"usage": null}"#,
            r#""response": {"usage": {"input_tokens": 1}}"#,
            r#""response": {"status": "completed"}"#,
            r#""response": 5"#,
            r#""message": {"id": "msg", "usage": {"input_tokens": 25, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 1}}"#,
            r#""message": {"usage": 7}"#,
            r#""message": {"id": "m"}"#,
            r#""message": "x""#,
            r#""id": "chatcmpl-1""#,
            r#""model": "m", "object": "chat.completion.chunk", "created": 1"#,
            r#""nested": [[[{"usage": {"prompt_tokens": 9}}]]]"#,
        ];
        let whole: &[&str] = &[
            "data: [DONE]\n\n",
            "data:\n\n",
            ": comment only\n\n",
            "data: [1, 2]\n\n",
            "data: \"str\"\n\n",
            "data: 5\n\n",
            "data: null\n\n",
            "data: {\"usage\":\n\n",
            "data: not json\n\n",
            "data: {\"choices\": [],\ndata: \"usage\": {\"prompt_tokens\": 5, \"completion_tokens\": 1}}\n\n",
        ];
        let names: &[&str] = &[
            "",
            "event: error\n",
            "event: message_delta\n",
            "event: ping\n",
        ];
        for api in [
            Api::OpenAiChat,
            Api::OpenAiResponses,
            Api::AnthropicMessages,
        ] {
            for strip in [false, true] {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (api as u64) << 1 ^ strip as u64);
                let mut new = StreamMeter::new(api, strip, 33);
                let mut old = new.clone();
                for _ in 0..4000 {
                    let raw = if rng.next() % 8 == 0 {
                        rng.pick(whole).to_string()
                    } else {
                        let n = 1 + rng.next() % 6;
                        let body: Vec<&str> = (0..n).map(|_| rng.pick(members)).collect();
                        format!("{}data: {{{}}}\n\n", rng.pick(names), body.join(", "))
                    };
                    let got = new.observe(raw.as_bytes());
                    let want = reference::observe(&mut old, raw.as_bytes());
                    assert_eq!(got, want, "{api:?} {raw}");
                    assert_eq!(new, old, "{api:?} strip={strip} after {raw}");
                    assert_eq!(new.usage_so_far(), old.usage_so_far());
                }
            }
        }
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
