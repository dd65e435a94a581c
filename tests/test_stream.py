"""TokenStream: UTF-8 split across tokens, stop strings split across tokens."""

from __future__ import annotations

from inference._stream import TokenStream
from inference.types import Token


def feed_all(stream: TokenStream, pieces: list[bytes]) -> list[Token]:
    out: list[Token] = []
    for i, piece in enumerate(pieces):
        out += stream.feed(i, piece)
        if stream.stopped:
            return out
    return out + stream.flush()


def test_a_character_split_across_tokens_is_emitted_whole():
    tokens = feed_all(TokenStream(), [b"caf", b"\xc3", b"\xa9!"])
    assert [t.text for t in tokens] == ["caf", "", "é!"]


def test_stop_string_spanning_tokens_is_cut_and_not_returned():
    stream = TokenStream(("END",))
    tokens = feed_all(stream, [b"abc E", b"N", b"D tail"])
    assert "".join(t.text for t in tokens) == "abc "
    assert stream.stopped


def test_a_partial_stop_prefix_that_does_not_complete_is_released():
    tokens = feed_all(TokenStream(("END",)), [b"E", b"N", b"X", b"!"])
    assert "".join(t.text for t in tokens) == "ENX!"
    assert [t.id for t in tokens] == [0, 1, 2, 3]


def test_earliest_of_several_stop_strings_wins():
    tokens = feed_all(TokenStream(("zz", "b")), [b"aab", b"zz"])
    assert "".join(t.text for t in tokens) == "aa"


def test_invalid_utf8_is_replaced_not_raised():
    tokens = feed_all(TokenStream(), [b"\xff", b"ok"])
    assert "".join(t.text for t in tokens) == "\ufffdok"


def test_a_character_left_unfinished_at_the_end_becomes_a_replacement_character():
    tokens = feed_all(TokenStream(), [b"ok", b"\xe2\x82"])
    assert [t.text for t in tokens] == ["ok", "\ufffd"]
