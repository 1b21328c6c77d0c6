"""The synthetic recall tasks: every answer annotated where an induction head would find it, one
token per word, reproducible, prepared like any source; and the BOS sampler."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prism_lm.data.loader import RandomWindows, make_loader
from prism_lm.data.prepare import prepare, tokenize_document
from prism_lm.data.shards import ShardSet, read_manifest
from prism_lm.data.sources import Document, Source
from prism_lm.data.synthetic import ANNOTATION_KINDS, parse_task
from prism_lm.errors import PrismError


def _tokens_and_notes(spec: str, i: int):
    doc = parse_task(spec).document(i)
    tokens, deps = tokenize_document(Document(doc.text, doc.dependencies))
    return tokens, deps


@given(pairs=st.integers(1, 12), extra=st.integers(0, 12), vocab_extra=st.integers(0, 20), i=st.integers(0, 10**6))
@settings(max_examples=25, deadline=None)
def test_every_mqar_answer_is_its_keys_value_one_token_each(pairs, extra, vocab_extra, i):
    queries = max(1, pairs - extra % (pairs + 1)) if pairs > 1 else 1
    spec = f"synthetic:mqar:5:pairs={pairs},queries={queries},vocab={pairs + vocab_extra}"
    tokens, deps = _tokens_and_notes(spec, i)
    assert len(tokens) == 2 * (pairs + queries)  # one GPT-2 token per key and per value
    assert len(deps) == queries
    keys, values = tokens[:2 * pairs:2], tokens[1:2 * pairs:2]
    assert len(set(keys.tolist())) == pairs and not set(keys.tolist()) & set(values.tolist())
    for recall, antecedent, kind in deps:
        assert ANNOTATION_KINDS[kind] == "mqar" and recall >= 2 * pairs  # answers sit in the query part
        assert tokens[recall] == tokens[antecedent]  # the answer is the value seen before ...
        assert tokens[recall - 1] == tokens[antecedent - 1]  # ... after the same key: an induction step


@given(length=st.integers(2, 30), i=st.integers(0, 10**6))
@settings(max_examples=25, deadline=None)
def test_the_copy_task_annotates_every_copied_word_after_the_first(length, i):
    tokens, deps = _tokens_and_notes(f"synthetic:induction:5:length={length},min_length={length},vocab=64", i)
    assert len(tokens) == 2 * length and (tokens[:length] == tokens[length:]).all()
    assert len(set(tokens[:length].tolist())) == length
    assert [(r, a) for r, a, _ in deps] == [(length + j, j) for j in range(1, length)]
    assert {ANNOTATION_KINDS[k] for _, _, k in deps} == {"copy"}


def test_the_copy_length_varies_per_document_so_no_fixed_lag_answers():
    task = parse_task("synthetic:induction:50:length=16")
    lengths = {len(task.document(i).text.split()) // 2 for i in range(50)}
    assert min(lengths) == 8 and max(lengths) == 16 and len(lengths) > 5


def test_a_task_is_reproducible_from_its_spec_and_its_seed_changes_it():
    a, b = parse_task("synthetic:mqar:3"), parse_task("synthetic:mqar:3:seed=1")
    assert a.document(2) == parse_task("synthetic:mqar:3").document(2)
    assert a.document(2).text != b.document(2).text
    fp = Source("synthetic:mqar:3:pairs=4,queries=2").fingerprint()
    assert fp["synthetic"] == {"task": "mqar", "documents": 3, "pairs": 4, "queries": 2, "vocab": 64, "seed": 0}


@pytest.mark.parametrize("spec, message", [
    ("synthetic:recall:5", "TASK one of mqar, induction"),
    ("synthetic:mqar", "synthetic:TASK:N"),
    ("synthetic:mqar:x", "synthetic:TASK:N"),
    ("synthetic:mqar:0", r"N \(documents\) must be >= 1"),
    ("synthetic:mqar:5:pairs=4,keys=2", "unknown mqar key 'keys'"),
    ("synthetic:mqar:5:pairs=four", "pairs must be an integer"),
    ("synthetic:mqar:5:pairs=0", r"pairs must be in \[1, 1024\]"),
    ("synthetic:mqar:5:pairs=4,queries=5", "queries \\(5\\) cannot exceed pairs \\(4\\)"),
    ("synthetic:mqar:5:pairs=20,queries=2,vocab=10", "vocab >= pairs"),
    ("synthetic:induction:5:length=20,vocab=10", "vocab >= length"),
    ("synthetic:induction:5:length=8,min_length=9", "min_length must be 0"),
    ("synthetic:mqar:5:pairs=1000,queries=1,vocab=8000", "needs 16000 one-token words"),
])
def test_bad_task_specs_are_one_line_errors(spec, message):
    with pytest.raises(PrismError, match=message) as info:
        Source(spec)
    assert "\n" not in str(info.value)


def test_a_prepared_task_carries_its_annotations_and_kinds(tmp_path):
    prepare(["synthetic:mqar:200:pairs=6,queries=3,vocab=32"], tmp_path / "d", val_fraction=0.1,
            compact_vocab=True, progress=False)
    train = ShardSet(tmp_path / "d", "train")
    notes = train.annotations()
    assert read_manifest(tmp_path / "d")["annotation_kinds"] == list(ANNOTATION_KINDS)
    assert len(notes) == 3 * 180 and set(notes[:, 2].tolist()) == {ANNOTATION_KINDS.index("mqar")}
    tokens = train.window(0, len(train))
    assert (tokens[notes[:, 0]] == tokens[notes[:, 1]]).all()


def test_the_bos_sampler_starts_every_window_on_the_document_separator(tmp_path):
    prepare(["synthetic:induction:300:length=8"], tmp_path / "d", val_fraction=0.1, compact_vocab=True,
            progress=False)
    train = ShardSet(tmp_path / "d", "train")
    eot = train.codec().eot
    loader = make_loader("bos", train, batch_size=16, block_size=24, seed=3)
    for _ in range(5):
        x, y = loader.next_batch()
        assert (x[:, 0] == eot).all() and torch.equal(x[:, 1:], y[:, :-1])
    plain = RandomWindows(train, 16, 24, seed=3)
    assert not (plain.next_batch()[0][:, 0] == eot).all()  # the default sampler starts anywhere
    twin = make_loader("bos", train, batch_size=16, block_size=24, seed=3)
    first = twin.next_batch()[0]
    twin.load_state_dict({"kind": "random", "batches": 0})
    assert torch.equal(twin.next_batch()[0], first)  # resumable like the random sampler


def test_the_bos_sampler_refuses_a_split_without_separators(tmp_path):
    (tmp_path / "one.txt").write_text("word " * 400)
    prepare([str(tmp_path / "one.txt")], tmp_path / "d", val_fraction=0.0, compact_vocab=True, progress=False)
    with pytest.raises(PrismError, match="no <\\|endoftext\\|> with 25 tokens after it"):
        make_loader("bos", ShardSet(tmp_path / "d", "train"), batch_size=2, block_size=24, seed=0)


def test_models_trained_on_bos_windows_are_analysed_on_bos_windows(tmp_path):
    from prism_lm.data.loader import window_starts

    prepare(["synthetic:mqar:100:pairs=4,queries=4,vocab=16"], tmp_path / "d", val_fraction=0.1,
            compact_vocab=True, progress=False)
    train = ShardSet(tmp_path / "d", "train")
    tokens, eot = train.window(0, len(train)), train.codec().eot
    aligned = window_starts(train, 16, 5, bos=True)
    assert len(aligned) == 5 and all(tokens[s] == eot for s in aligned)
    assert all(tokens[s + 1:s + 17].tolist().count(eot) == 0 for s in aligned)  # one whole example each
    plain = [w * 16 for w in range((len(train) - 1) // 16)]
    assert window_starts(train, 16, None) == plain
    first, middle, last = window_starts(train, 16, 3)  # spread evenly: the first, the middle, the last
    assert (first, last) == (plain[0], plain[-1]) and abs(plain.index(middle) - (len(plain) - 1) / 2) <= 0.5
    assert window_starts(train, 16, len(plain) + 5) == plain


def test_a_model_trained_on_bos_windows_is_scored_on_bos_windows(tmp_path):
    from prism_lm.evaluate import evaluate_split
    from prism_lm.model import PrismLM
    from tests.helpers import tiny_model_config

    prepare(["synthetic:mqar:60:pairs=4,queries=4,vocab=16"], tmp_path / "d", val_fraction=0.5,
            compact_vocab=True, progress=False)
    val = ShardSet(tmp_path / "d", "val")
    torch.manual_seed(0)
    model = PrismLM(tiny_model_config(vocab_size=val.vocab_size, block_size=16)).eval()
    tokens, eot = val.window(0, len(val)), val.codec().eot
    every = [int(s) for s in (tokens == eot).nonzero()[0] if s + 17 <= len(val)]
    starts = [every[round(i * (len(every) - 1) / 4)] for i in range(5)]  # five spread over the split
    rows = torch.from_numpy(val.windows(starts, 17))
    with torch.no_grad():
        direct = float(model(rows[:, :-1], rows[:, 1:]).loss)
    assert evaluate_split(model, val, 16, max_windows=5, bos=True)["loss"] == pytest.approx(direct, rel=1e-5)
    assert evaluate_split(model, val, 16, max_windows=5)["windows"] == 5  # the plain windows: another sample


def test_eval_of_a_run_trained_on_bos_windows_reads_bos_windows(tmp_path):
    """The run records data.sampler = "bos"; prism eval, ablate and analyze follow it."""
    from prism_lm.evaluate import evaluate_checkpoint, evaluate_split
    from prism_lm.run_dir import trained_on_bos
    from prism_lm.train.loop import train
    from tests.helpers import tiny_train_config

    prepare(["synthetic:mqar:80:pairs=4,queries=4,vocab=16"], tmp_path / "d", val_fraction=0.25,
            compact_vocab=True, progress=False)
    train(tiny_train_config(tmp_path / "d", tmp_path / "run", **{"run.max_iters": 4, "model.block_size": 16,
                                                                 "run.eval_interval": 2, "data.sampler": "bos"}))
    import shutil

    shutil.copytree(tmp_path / "run" / "checkpoints" / "best", tmp_path / "bare")
    assert trained_on_bos(tmp_path / "run") and trained_on_bos(tmp_path / "run" / "checkpoints" / "best")
    assert not trained_on_bos(tmp_path / "bare")  # a checkpoint outside its run records no sampler
    _, (result,) = evaluate_checkpoint(tmp_path / "run", None)
    from prism_lm.checkpoint.model import open_on_data

    model, _, data = open_on_data(tmp_path / "run")
    expected = evaluate_split(model, ShardSet(data, "val"), 16, bos=True)["loss"]
    assert result["loss"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("pairs, queries", [(4, 4), (8, 4), (6, 1)])
def test_elimination_without_recall_scores_the_stated_floor(pairs, queries):
    """The look-alike of recall: name a value of a pair not asked yet. On documents whose values are
    distinct its expected accuracy is exactly ``elimination_accuracy`` (hand: 0.52 at 4 and 4)."""
    from prism_lm.data.synthetic import elimination_accuracy

    task = parse_task(f"synthetic:mqar:200:pairs={pairs},queries={queries},vocab=64")
    scores = []
    for i in range(200):
        words = task.document(i).text.split()
        keys, values = words[:2 * pairs:2], words[1:2 * pairs:2]
        if len(set(values)) < pairs:
            continue
        asked, expected = [], 0.0
        for q in range(queries):
            key, value = words[2 * pairs + 2 * q], words[2 * pairs + 2 * q + 1]
            candidates = [v for k, v in zip(keys, values, strict=True) if k not in asked]
            expected += candidates.count(value) / len(candidates)
            asked.append(key)
        scores.append(expected / queries)
    assert len(scores) > 20
    assert scores == pytest.approx([elimination_accuracy(pairs, queries)] * len(scores))
    assert elimination_accuracy(4, 4) == pytest.approx((1 / 4 + 1 / 3 + 1 / 2 + 1) / 4)


@pytest.fixture(scope="module")
def answers_data(tmp_path_factory):
    """A small MQAR folder (annotated answers) that the answer-scoring tests share."""
    data = tmp_path_factory.mktemp("answers") / "d"
    prepare(["synthetic:mqar:200:pairs=4,queries=2,vocab=8"], data, val_fraction=0.1, compact_vocab=True,
            progress=False)
    return data


@pytest.mark.parametrize("sampler", ["bos", "random", "sequential"])
def test_loss_on_answers_scores_exactly_the_annotated_answers_and_leaves_the_inputs(answers_data, sampler):
    """data.loss_on = "answers": each sampler's targets are the same tokens where the data annotates an
    answer and IGNORE_INDEX everywhere else (checked against the annotation file, window by window)."""
    from prism_lm.model.loss import IGNORE_INDEX

    train = ShardSet(answers_data, "train")
    answer_at = set(train.annotations()[:, 0].tolist())
    plain = make_loader(sampler, train, batch_size=8, block_size=16, seed=5)
    masked = make_loader(sampler, train, batch_size=8, block_size=16, seed=5, answers=True)
    scored = 0
    for _ in range(4):
        (x, y), (xm, ym) = plain.next_batch(), masked.next_batch()
        assert torch.equal(x, xm)
        kept = ym != IGNORE_INDEX
        assert torch.equal(ym[kept], y[kept])
        # the window starting where x[b, 0] sits: recover each row's start from the plain sampler's tokens
        for b in range(x.shape[0]):
            start = _start_of(train, x[b])
            assert kept[b].tolist() == [start + t + 1 in answer_at for t in range(16)]
        scored += int(kept.sum())
    assert scored > 0


def _start_of(shards: ShardSet, row: torch.Tensor) -> int:
    """The offset of the unique window of ``shards`` equal to ``row`` (documents repeat rarely at this size)."""
    stream = torch.from_numpy(shards.window(0, len(shards)))
    hits = (stream.unfold(0, len(row), 1) == row).all(1).nonzero().flatten().tolist()
    assert len(hits) == 1, f"{len(hits)} windows match"
    return hits[0]


def test_loss_on_answers_needs_annotations_and_a_known_value(tmp_path):
    from prism_lm.config import load_train_config

    (tmp_path / "plain.txt").write_text("a plain story with no annotations.\n" * 200)
    prepare([str(tmp_path / "plain.txt")], tmp_path / "d", val_fraction=0.2, compact_vocab=True, progress=False)
    with pytest.raises(PrismError, match=r"^data.loss_on = 'answers' needs annotated answers, and the train split"):
        make_loader("random", ShardSet(tmp_path / "d", "train"), batch_size=2, block_size=8, seed=0, answers=True)
    prepare(["synthetic:mqar:50:pairs=6,queries=1,vocab=8"], tmp_path / "m", val_fraction=0.2, compact_vocab=True,
            progress=False)
    mqar = ShardSet(tmp_path / "m", "train")  # one answer per 15 tokens: most 4-token windows hold none
    for sampler in ("random", "sequential", "bos"):
        with pytest.raises(PrismError, match=r"^data.loss_on = 'answers': [\d,]+ of the [\d,]+ windows of 4 tokens "
                                             r"this sampler draws from the train split hold no answer"):
            make_loader(sampler, mqar, batch_size=2, block_size=4, seed=0, answers=True)
    make_loader("bos", mqar, batch_size=2, block_size=14, seed=0, answers=True)  # one whole example: its answer
    with pytest.raises(PrismError, match=r"^data.loss_on must be one of all, answers, got 'keys'"):
        load_train_config("tiny-prism-cpu", ['data.loss_on="keys"'])


def test_the_val_loss_on_answers_scores_the_answer_tokens_of_the_evaluation_windows(answers_data):
    """evaluate_split(answers=True), the sweep's answer_loss column (what tuning chooses on for runs
    trained on answers), is the mean loss at the annotated answers of the windows the evaluation reads,
    recomputed here from the model's per-token loss and the annotation file."""
    import numpy as np

    from prism_lm.config import load_train_config
    from prism_lm.data.loader import window_starts
    from prism_lm.evaluate import evaluate_split
    from prism_lm.experiments.columns import column_words
    from prism_lm.experiments.job import EvaluateSpec
    from prism_lm.model import PrismLM
    from prism_lm.model.loss import lm_cross_entropy

    data = answers_data  # its path goes into the config
    val = ShardSet(data, "val")
    cfg = load_train_config("tiny-prism-cpu", [f'data.dir="{data}"', 'data.loss_on="answers"', "model.block_size=12",
                                               "model.vocab_size=64"])
    torch.manual_seed(0)
    model = PrismLM(cfg.model).eval()
    got = evaluate_split(model, val, 12, bos=True, answers=True)
    starts = np.asarray(window_starts(val, 12, None, bos=True))
    rows = torch.from_numpy(val.windows(starts.tolist(), 13))
    with torch.no_grad():
        nll = lm_cross_entropy(model(rows[:, :-1]).logits, rows[:, 1:], reduction="none")
    keep = torch.from_numpy(val.answer_mask()[starts[:, None] + 1 + np.arange(12)])
    assert got["tokens"] == int(keep.sum()) > 0
    assert got["loss"] == pytest.approx(float(nll[keep].mean()), rel=1e-5)
    every_token = evaluate_split(model, val, 12, bos=True)
    assert got["loss"] != pytest.approx(every_token["loss"])
    assert got["dropped_tokens"] == every_token["dropped_tokens"]  # the same windows read, fewer tokens scored
    assert got["every_token_loss"] == pytest.approx(every_token["loss"], rel=1e-5)  # both from one pass
    assert "every_token_loss" not in every_token
    assert "answer_loss_12" in EvaluateSpec([12], 0, False).columns(cfg)
    assert "answer_loss_12" not in EvaluateSpec([12], 0, False).columns(load_train_config("tiny-prism-cpu"))
    assert column_words("answer_loss_12").startswith("val loss on the answers at context 12")


def test_the_val_estimate_of_a_run_trained_on_answers_scores_the_answers(answers_data):
    """estimate_loss with data.loss_on = "answers" is the mean, batch by batch, of the loss at the answer
    tokens of its fixed windows, recomputed here from unmasked batches and the annotation file."""
    import contextlib

    import numpy as np

    from prism_lm.config import load_train_config
    from prism_lm.model import PrismLM
    from prism_lm.model.loss import lm_cross_entropy
    from prism_lm.train.loop import estimate_loss, eval_windows

    data = answers_data  # its path goes into the config
    val = ShardSet(data, "val")
    cfg = load_train_config("tiny-prism-cpu", [f'data.dir="{data}"', 'data.loss_on="answers"', 'data.sampler="bos"',
                                               "model.block_size=12", "model.vocab_size=64", "run.eval_iters=3",
                                               "run.batch_size=4"])
    torch.manual_seed(0)
    model = PrismLM(cfg.model).eval()
    loader = eval_windows(val, cfg, torch.device("cpu"))
    got = estimate_loss(model, loader, cfg, contextlib.nullcontext())
    assert not got.requires_grad  # evaluated without building a graph
    assert float(estimate_loss(model, loader, cfg, contextlib.nullcontext())) == float(got)  # the same windows again
    windows = RandomWindows(val, 4, 12, seed=cfg.run.seed + 7919, bos=True)
    answers, means = val.answer_mask(), []
    for _ in range(3):
        rng = np.random.default_rng([windows.seed, windows.batches])  # the sampler's own draw, replayed
        starts = windows.starts[rng.integers(0, len(windows.starts), size=4)]
        x, y = windows.next_batch()
        with torch.no_grad():
            nll = lm_cross_entropy(model(x).logits, y, reduction="none")
        keep = torch.from_numpy(answers[starts[:, None] + 1 + np.arange(12)])
        means.append(nll[keep].mean())
    assert float(got) == pytest.approx(float(torch.stack(means).mean()), rel=1e-5)
    everything = load_train_config("tiny-prism-cpu", [f'data.dir="{data}"', 'data.sampler="bos"', "model.block_size=12",
                                                      "model.vocab_size=64", "run.eval_iters=3", "run.batch_size=4"])
    all_tokens = eval_windows(val, everything, torch.device("cpu"))
    assert float(estimate_loss(model, all_tokens, everything, contextlib.nullcontext())) != float(got)
