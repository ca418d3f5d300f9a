import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashlive.perception.speech_text import ClauseSplitter, speakable


def split_stream(text: str, step: int = 1, **kwargs: int) -> list[str]:
    splitter = ClauseSplitter(**kwargs)
    pieces: list[str] = []
    for i in range(0, len(text), step):
        pieces += splitter.feed(text[i : i + step])
    return pieces + splitter.flush()


def test_first_piece_is_released_at_the_first_clause_with_enough_words() -> None:
    splitter = ClauseSplitter()
    assert splitter.feed("Well, the answer") == []
    assert splitter.feed(",") == []  # "answer,5" would be a number: wait for the next character
    assert splitter.feed(" in short, it is") == ["Well, the answer,"]
    assert splitter.flush() == ["in short, it is"]


def test_later_pieces_end_at_sentence_ends_only() -> None:
    text = "Sure, I can help. Paris is big, old, and busy. It has museums!"
    assert split_stream(text) == [
        "Sure, I can help.",
        "Paris is big, old, and busy.",
        "It has museums!",
    ]


def test_a_short_first_sentence_is_released_at_once() -> None:
    splitter = ClauseSplitter()
    assert splitter.feed("Yes! ") == ["Yes!"]
    assert splitter.feed("It is, as you say, ") == []


def test_sentence_end_waits_for_the_next_character() -> None:
    splitter = ClauseSplitter()
    assert splitter.feed("It costs 3.") == []
    assert splitter.feed("5 euros today. And") == ["It costs 3.5 euros today."]
    assert splitter.flush() == ["And"]


@pytest.mark.parametrize(
    "text",
    [
        "Ask Dr. Smith about it.",
        "Bring fruit, e.g. apples or pears.",
        "That is, i.e. the other one.",
        "Written by J. R. R. Tolkien in England.",
        "The U.S. team won the match.",
        "It happened on Jan. 5 in the morning.",
        "Compare this vs. that one today.",
    ],
)
def test_abbreviations_and_initials_do_not_end_sentences(text: str) -> None:
    assert split_stream(text, first_min_words=20) == [text]


def test_question_and_exclamation_marks_and_closing_quotes() -> None:
    text = 'He said "stop!" Then he left?! Odd.'
    assert split_stream(text, first_min_words=20) == ['He said "stop!"', "Then he left?!", "Odd."]


def test_newlines_end_pieces_and_list_numbers_do_not() -> None:
    text = "Here are the steps:\n1. Preheat the oven\n2. Bake it\n\nEnjoy"
    assert split_stream(text) == [
        "Here are the steps:",
        "1. Preheat the oven",
        "2. Bake it",
        "Enjoy",
    ]


def test_a_sentence_ending_in_a_number_is_still_a_sentence() -> None:
    assert split_stream("The answer is 42. Next one.", first_min_words=20) == [
        "The answer is 42.",
        "Next one.",
    ]


def test_long_runs_are_cut_at_max_words_preferring_a_clause_mark() -> None:
    words = " ".join(f"w{i}" for i in range(12))
    text = f"Intro sentence here. {words}, and then more words follow here"
    pieces = split_stream(text, max_words=10)
    assert pieces[0] == "Intro sentence here."
    assert pieces[1] == " ".join(f"w{i}" for i in range(10))
    assert pieces[2] == "w10 w11, and then more words follow here"


def test_forced_cut_uses_the_last_clause_mark_within_the_limit() -> None:
    text = "First. one two three four, five six seven eight nine ten eleven twelve"
    assert split_stream(text, max_words=8) == [
        "First.",
        "one two three four,",
        "five six seven eight nine ten eleven twelve",
    ]


def test_flush_returns_the_rest_and_starts_over() -> None:
    splitter = ClauseSplitter()
    assert splitter.feed("no boundary here") == []
    assert splitter.flush() == ["no boundary here"]
    assert splitter.flush() == []
    # After a flush the next text counts as a first piece again.
    assert splitter.feed("One more time, please ") == ["One more time,"]


def test_whitespace_only_text_gives_nothing() -> None:
    assert split_stream("  \n\n  ") == []


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        ClauseSplitter(first_min_words=0)
    with pytest.raises(ValueError):
        ClauseSplitter(first_min_words=5, max_words=4)


@given(st.text(alphabet="ab .,!?\n3", max_size=120), st.integers(1, 7))
def test_pieces_keep_every_word_in_order_whatever_the_chunking(text: str, step: int) -> None:
    pieces = split_stream(text, step=step, max_words=6)
    assert " ".join(pieces).split() == text.split()
    assert all(piece == piece.strip() and piece for piece in pieces)
    assert all(len(piece.split()) <= 6 for piece in pieces)


@given(st.text(alphabet="abc ,.\n", max_size=80))
def test_chunking_does_not_change_the_pieces(text: str) -> None:
    assert split_stream(text, step=1) == split_stream(text, step=len(text) or 1)


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("## Title\nSome **bold** and *italic* text.", "Title Some bold and italic text."),
        ("- one\n* two\n+ three", "one two three"),
        ("Run `pip install x` now.", "Run pip install x now."),
        ("```python\nprint(1)\n```", "print(1)"),
        ("See [the docs](https://example.com/docs) today.", "See the docs today."),
        ("Visit https://www.Example.com/a/b?c=1. Then rest.", "Visit example.com. Then rest."),
        ("Go to www.python.org, it helps", "Go to python.org, it helps"),
        ("> quoted line", "quoted line"),
        ("keep snake_case_names and _emphasis_", "keep snake_case_names and emphasis"),
        ("~~old~~ new", "old new"),
        ("a   b\n\n\tc", "a b c"),
        ("", ""),
    ],
)
def test_speakable_removes_markup(text: str, spoken: str) -> None:
    assert speakable(text) == spoken


def test_first_piece_can_be_cut_after_a_few_words_without_punctuation() -> None:
    splitter = ClauseSplitter(first_max_words=4)
    pieces = splitter.feed("The capital of France is Paris and it is lovely ")
    assert pieces == ["The capital of France"]
    # Later pieces wait for the sentence end as usual.
    assert splitter.feed("in spring. ") == ["is Paris and it is lovely in spring."]
    assert splitter.flush() == []


def test_first_piece_prefers_an_earlier_clause_mark() -> None:
    splitter = ClauseSplitter(first_max_words=6)
    assert splitter.feed("Yes, of ") == []  # "Yes," alone is too short to say
    assert splitter.feed("course, I think so ") == ["Yes, of course,"]
