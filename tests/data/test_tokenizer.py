import pytest

from prism_lm.data import tokenizer
from prism_lm.errors import PrismError


def test_known_gpt2_ids_offline():
    assert tokenizer.encode("Hello world") == [15496, 995]
    assert tokenizer.gpt2_encoding().encode("<|endoftext|>", allowed_special="all") == [tokenizer.EOT_ID]
    text = "Once upon a time, Lily's dog — “Spot” — ran 3 miles!\n"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.encode("<|endoftext|>") != [tokenizer.EOT_ID]  # ordinary text, not the special token


def test_padding_ids_decode_to_replacement_char():
    assert tokenizer.decode([15496, 50300]) == "Hello\ufffd"


def test_hash_mismatch_is_refused(monkeypatch):
    monkeypatch.setattr(tokenizer, "_package_file", lambda name: b"tampered")
    with pytest.raises(PrismError, match="sha256"):
        tokenizer._checked("encoder.json", tokenizer.ENCODER_SHA256)
