"""Words for the sweep table's column names, so a report's reader need not decode them.

A column name is built by ``job.EvaluateSpec.columns`` from a grammar: an optional ``init_`` (the
untrained model), a head group (a stream such as ``signal``, ``all`` heads, or ``stream_diff``: the
first stream minus the second), and a measure of the registry (``analysis.measures.MEASURES``, whose
label gives the words); or a stream silenced (``{stream}_off_...``), a loss at a context
(``val_loss_128``), a recall column, or a training column. ``column_words`` reads that grammar back;
the report prints it beside the code names, which stay the table's headings because they are the
names in results.csv and report.json.
"""

from __future__ import annotations

import re

from prism_lm.analysis.measures import FRACTIONS, MEASURES

TRAINING_WORDS = {
    "steps": "training steps run", "tokens_seen": "training tokens seen",
    "train_seconds": "training wall time (s)", "train_loss_final": "last training loss (nats)",
    "val_estimate_best": "best periodic val estimate (nats)", "val_estimate_final": "last periodic val estimate (nats)",
    "grad_norm_max": "largest gradient norm", "grad_norm_mean": "mean gradient norm",
    "clipped_fraction": "fraction of steps clipped", "logged_steps": "steps logged", "diverged": "the run diverged",
    "failed": "the run failed (diverged, or ended within the margin of the unigram entropy)",
    "unigram_entropy": "unigram entropy of the training tokens (nats)",
    "context_gain": "unigram entropy − val loss (nats): what context bought",
    "parameters": "parameter count",
    "lambda_final": "PRISM's λ at the last step (the schedule's end, or where a learned λ went)",
    "loss_spikes": "loss spikes after warm-up",
    "loss_spike_rate": "loss spikes per 1,000 steps",
    "grad_norm_late_mean": "mean gradient norm, second half of training",
    "grad_norm_late_log_sd": "sd of log gradient norm, second half of training",
    "recall_loss": "loss on answer (recall) tokens (nats)", "other_loss": "loss on the other tokens (nats)",
    "recall_accuracy": "answer accuracy (the answer is the top prediction)",
    "recall_excess": "recall-token loss − other-token loss (nats)", "cross_kernel": "cross-stream kernel",
}
GROUPS = {"all": "every head", "stream_diff": "first − second stream"}
BOUNDED_SUFFIXES = ("clipped_fraction", "diverged", "hit_rate", "lag_null", "diversity", "accuracy", *FRACTIONS)


def bounded(column: str) -> bool:
    """A fraction in [0, 1] (its intervals over seeds are taken on the logit scale, wherever they are
    printed: the arm tables and the gates); a difference of two fractions is not one."""
    fraction = column.endswith(BOUNDED_SUFFIXES) or "recall_accuracy_" in column  # per kind: recall_accuracy_mqar
    return fraction and "stream_diff" not in column


def column_words(column: str) -> str:
    """The column in words (its own name when the grammar does not know it)."""
    if column.startswith("init_"):
        return f"untrained model: {column_words(column[len('init_'):])}"
    if column in TRAINING_WORDS:
        return TRAINING_WORDS[column]
    for head, words, which in (("best_val_loss_", "best val loss", "whole val split"),
                               ("val_loss_", "val loss", "whole val split"),
                               ("answer_loss_", "val loss on the answers", "runs trained on answers")):
        if column.startswith(head) and column[len(head):].isdigit():
            return f"{words} at context {column[len(head):]} (nats, {which})"
    if "_off_" in column:
        stream, _, rest = column.partition("_off_")
        which = {"recall_delta": "recall-token loss change", "other_delta": "other-token loss change",
                 "recall_accuracy": "answer accuracy"}
        base = next((k for k in which if rest.startswith(k)), None)
        if base:
            span = rest[len(base):].lstrip("_")
            return f"{which[base]} with the {stream} stream silenced" + (f" ({span})" if span else "")
    for name in sorted(MEASURES, key=len, reverse=True):  # the longest measure name that ends the column
        group, sep, tail = column.rpartition(f"_{name}")
        if sep and group and (not tail or tail.startswith("_")):
            where = f", windows at {tail.lstrip('_').replace('_', ' ')}" if tail else ""
            return f"{MEASURES[name].label}, {GROUPS.get(group, f'{group} heads')}{where}"
    return _other_words(column)


def _other_words(column: str) -> str:
    """Diversity, head ablations, ISTA sparsity, long contexts and recall kinds."""
    if m := re.fullmatch(r"(\w+)_role_(diversity|strength)", column):
        return (f"role {m[2]} over dependency kinds (per-kind selectivity; diversity: 1 − weighted cosine "
                f"similarity of the heads' roles), {m[1]} heads")
    if column.endswith("_diversity"):
        return f"head diversity (mean pairwise JS distance over word classes), {column[:-len('_diversity')]} heads"
    if m := re.fullmatch(r"(\w+)_head_ablation_(mean|spread)", column):
        return f"{m[2]} over {m[1]} heads of the val-loss change when one head is zeroed"
    if m := re.fullmatch(r"ista_zero_fraction(?:_l(\d+))?", column):
        return "fraction of ISTA codes at zero" + (f", layer {m[1]}" if m[1] else "")
    if m := re.fullmatch(r"long_(\d+)x_(\w+)", column):
        what = {"excess": "loss minus the trained context's (nats)", "sink_first": "first-position mass",
                "sink_first4": "first-four mass"}.get(m[2], m[2].replace("_", " "))
        return f"at {m[1]}x the trained context: {what}"
    if column.startswith("recall_loss_"):
        return f"loss on answer tokens of kind {column[len('recall_loss_'):]} (nats)"
    if column.startswith("recall_accuracy_"):
        return f"answer accuracy on answers of kind {column[len('recall_accuracy_'):]}"
    return column
