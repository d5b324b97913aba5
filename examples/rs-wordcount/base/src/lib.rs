//! Counting words in text.

/// Number of words in `text`, where words are separated by whitespace.
pub fn count_words(text: &str) -> usize {
    if text.is_empty() {
        return 0;
    }
    text.split(' ').count()
}

/// The longest word in `text`, if any.
pub fn longest_word(text: &str) -> Option<&str> {
    text.split_whitespace().max_by_key(|w| w.len())
}
