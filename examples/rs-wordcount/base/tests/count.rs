use wordcount::{count_words, longest_word};

#[test]
fn simple_sentence() {
    assert_eq!(count_words("the quick brown fox"), 4);
}

#[test]
fn empty_string() {
    assert_eq!(count_words(""), 0);
}

#[test]
fn longest() {
    assert_eq!(longest_word("a bbb cc"), Some("bbb"));
}
