"""The ``prism`` command: argparse subcommands, each parsing its arguments and calling one function.

A ``PrismError`` (bad input) prints one line, ``error: ...``, and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys

from prism_lm.bounds import INT64, MAX_NEW_TOKENS, MAX_POSITIONS, BoundedInt, FiniteFloat
from prism_lm.errors import PrismError
from prism_lm.model.attention import ATTENTION_KINDS

# every number option's type and bounds (prism_lm.bounds): a finite float, or an integer a machine holds
FINITE, NON_NEGATIVE = FiniteFloat(), FiniteFloat(0.0)
FRACTION, PROBABILITY = FiniteFloat(0.0, 1.0, high_open=True), FiniteFloat(0.0, 1.0, low_open=True)
COUNT, SEED = BoundedInt(1), BoundedInt(0, INT64)
WORKERS, BATCH, TOP_K = BoundedInt(1, 1024), BoundedInt(1, 2**16), BoundedInt(1, 2**31)
POSITIONS, NEW_TOKENS = BoundedInt(1, MAX_POSITIONS, high_open=False), BoundedInt(1, MAX_NEW_TOKENS, high_open=False)
SAMPLES, WINDOWS, INDEX = BoundedInt(1, 10_000, high_open=False), BoundedInt(1, 2**20), BoundedInt(0, 2**16)
STEPS, WARMUP, CHUNK = BoundedInt(1, 10**6), BoundedInt(0, 10**6), BoundedInt(0, 2**24)


def _sample(args) -> None:
    from prism_lm.sampling import sample

    texts = sample(args.checkpoint, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                   args.num_samples, args.seed, args.device, args.set)
    print("\n---\n".join(texts))


def _sweep_run(args) -> int:
    from prism_lm.experiments.runner import run_sweep

    return run_sweep(args.file, args.out, workers=args.workers, executor=args.executor, extend=args.extend)


def _sweep_report(args) -> None:
    from prism_lm.experiments.report import write_report

    paths = write_report(args.dir, args.out, overwrite=args.overwrite)
    print("wrote " + ", ".join(str(p) for p in paths.values()))


def _sweep_pack(args) -> None:
    from prism_lm.experiments.sweep_dir import SweepDir

    packed, left = SweepDir(args.dir).pack(args.out)
    print(f"wrote {args.out}: {packed} finished run(s)" + (f"; {left} unfinished left out (they start again "
                                                           "where the pack is continued)" if left else ""))


def _export_hf(args) -> None:
    from prism_lm.errors import warn
    from prism_lm.export.hf import export_hf

    out = export_hf(args.checkpoint, _out(args))
    print(f"wrote {out}")
    warn(f"loading {out} with trust_remote_code=True runs its Python files on your machine: keep the folder where "
         "only you (and people you trust) can write")


def _import_official(args) -> None:
    from prism_lm.checkpoint import import_official

    out = import_official(args.checkpoint, _out(args))
    print(f"wrote {out}")


def _import_crate(args) -> None:
    from prism_lm.checkpoint.crate import import_crate

    out = import_crate(args.checkpoint, _out(args, positional_ok=True))
    print(f"wrote {out}")


def _data_prepare(args) -> None:
    import time

    from prism_lm.data.prepare import prepare

    t0 = time.perf_counter()
    manifest, written = prepare(args.source, args.out, val_fraction=args.val_fraction, max_docs=args.max_docs,
                                workers=args.processes, compact_vocab=args.compact_vocab,
                                progress=sys.stderr.isatty())
    seconds = time.perf_counter() - t0
    if not written:
        print(f"{args.out}: up to date (same inputs), nothing to do")
        return
    total = sum(s["tokens"] for s in manifest["splits"].values())
    counts = ", ".join(f"{k} {v['tokens']:,} tokens / {v['documents']:,} docs" for k, v in manifest["splits"].items())
    print(f"{args.out}: {counts} ({total / max(seconds, 1e-9):,.0f} tokens/s, {seconds:.1f}s)")


def _data_inspect(args) -> None:
    from prism_lm.data.shards import inspect

    print(inspect(args.dir))


def _data_verify(args) -> None:
    from prism_lm.data.shards import verify

    print(verify(args.dir))


def _train(args) -> None:
    from prism_lm.config import load_train_config
    from prism_lm.train.loop import train

    if args.config is None:
        from prism_lm.config import shipped_configs

        raise PrismError(f"name a config: prism train NAME_OR_TOML (shipped: {', '.join(shipped_configs())})")
    cfg = load_train_config(args.config, args.set)
    summary = train(cfg, resume=args.resume, allow_config_change=args.allow_config_change)
    if summary.get("already_finished"):
        print(f"{summary['run_dir']}: already finished at step {summary['step']} (run.max_iters = "
              f"{cfg.run.max_iters}); nothing to do")
    elif summary["interrupted_by"]:
        print(f"stopped by {summary['interrupted_by']} at step {summary['step']}; checkpoint saved in "
              f"{summary['run_dir']}/checkpoints (continue with --resume auto)")
    else:
        best = summary["best_val_loss"]
        print(f"done: {summary['step']} steps, train loss {summary['train_loss']:.4f}"
              + (f", best val loss {best:.4f}" if best is not None else "") + f"; run in {summary['run_dir']}")


def _eval(args) -> None:
    import json

    from prism_lm.evaluate import evaluate_checkpoint

    data, results = evaluate_checkpoint(args.checkpoint, args.data, args.context, args.split, args.batch_size,
                                        args.device, args.set)  # data: the folder scored, named in the output
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), "data": str(data), "eval_overrides": args.set,
                          "results": results}))
        return
    for r in results:
        print(f"context {r['context']:>5}: {r['split']} loss {r['loss']:.4f}, perplexity {r['perplexity']:.2f} "
              f"({r['tokens']:,} tokens in {r['windows']:,} windows)")


def _demo(args) -> None:
    from prism_lm.demo import run_demo

    run_demo(args.out, analyze=not args.no_analysis)


def _bench(args) -> None:
    import json

    from prism_lm.bench import sweep_decode, sweep_train
    from prism_lm.config import load_train_config

    if args.config and args.config_option:
        raise PrismError("give the config once: prism bench train NAME (--config is the old spelling)")
    cfg = load_train_config(args.config or args.config_option or "prism-50m-tinystories", args.set)
    if args.bench_command == "train":
        rows = sweep_train(cfg, args.attention, args.path, args.loss_chunk, args.batch_size, args.steps, args.warmup,
                           args.device, args.dtype, args.compile)
    else:
        rows = sweep_decode(cfg, args.attention, args.batch_size, args.cache, args.prompt_len, args.new_tokens,
                            args.device, args.dtype)
    for row in rows:
        print(json.dumps(row), flush=True)


def _reference(text: str) -> tuple[str, float]:
    label, _, value = text.rpartition("=")
    if not label:
        raise argparse.ArgumentTypeError(f"expected LABEL=VALUE with a number, got {text!r}")
    try:
        return label, FINITE(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected LABEL=VALUE with a finite number, got {text!r}") from None


def _explore(args) -> None:
    from prism_lm.analysis.explore import write_explorer

    page = write_explorer(args.checkpoints, args.out, args.text, args.device, args.set)
    print(f"wrote {page} (open it in a browser; no server needed)")


def _ablate(args) -> None:
    import json

    from prism_lm import render
    from prism_lm.analysis.ablation import ablate, table, write_ablation

    result = ablate(args.checkpoint, args.data, args.lambdas, args.stream, args.heads or [], args.per_layer,
                    args.max_windows, args.device)
    if args.json:
        print(json.dumps(result, default=list))
    else:
        print(f"{result['checkpoint']} on {result['data']} ({result['split']}, {result['tokens']:,} tokens, "
              f"{result['recall_tokens']:,} recall tokens): unmodified loss {result['base']['all']:.4f}")
        print("\n".join(render.markdown_table(*table(result))))
        if result["note"]:
            print(f"note: {result['note']}")
    if args.out:
        for kind, path in write_ablation(result, args.out).items():
            print(f"{kind}: {path}", file=sys.stderr if args.json else sys.stdout)


def _analyze(args) -> None:
    from prism_lm.analysis.report import analyze_run

    paths = analyze_run(args.checkpoint, args.data, args.out, max_windows=args.max_windows,
                        references=args.reference, layer=args.layer, head=args.head, probe=args.probe,
                        target=args.target, device=args.device, overrides=args.set)
    for kind, path in paths.items():
        print(f"{kind}: {path}")


class _Help(argparse.HelpFormatter):
    """Every option's help shows its default, or "(required)"; a default of None (the help says what
    None means) or of a flag is not printed."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.required and action.option_strings:
            return text + " (required)"
        if action.default in (None, False, [], argparse.SUPPRESS) or "%(default)" in text:
            return text
        if action.option_strings or action.nargs in ("?", "*"):
            return text + " (default: %(default)s)"
        return text


class _Deprecated(argparse.Action):
    """An old spelling of an option: still accepted for one release, with a warning naming the new one."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"warning: {option_string} is deprecated and goes in the next release; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _out(args, positional_ok: bool = False) -> str:
    """``--out``, or the old positional output of export hf / import-official (with a warning;
    ``positional_ok``: a command whose positional output is not deprecated, import-crate FILE OUT)."""
    if args.out and args.legacy_out:
        raise PrismError(f"give the output once: --out {args.out} or the positional {args.legacy_out}")
    if args.legacy_out and not positional_ok:
        print(f"warning: the positional output folder is deprecated and goes in the next release; use --out "
              f"{args.legacy_out}", file=sys.stderr)
    if not (args.out or args.legacy_out):
        raise PrismError("--out is required: a new output folder")
    return args.out or args.legacy_out


def _checkpoint_arg(p) -> None:
    p.add_argument("checkpoint", help="checkpoint directory or run directory (its best, else newest, checkpoint)")


def _device_arg(p) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def _data_arg(p, what: str = "prepared data directory") -> None:
    p.add_argument("--data", default=None, help=f"{what} (None: the data folder the checkpoint's run recorded)")


def _eval_set_arg(p) -> None:
    from prism_lm.checkpoint.model import EVAL_KEYS

    p.add_argument("--set", action="append", default=[], metavar="model.KEY=VALUE",
                   help="an evaluation-time change that keeps the trained weights (repeatable): "
                        + "; ".join(f"{k}: {v}" for k, v in EVAL_KEYS.items()))


def _command(parent, name: str, text: str, func):
    p = parent.add_parser(name, help=text, description=text, formatter_class=_Help)
    p.set_defaults(func=func)
    return p


class _Parser(argparse.ArgumentParser):
    """argparse's own errors (a bad number, a missing argument) as one line, ``error: prism CMD: ...``,
    exit status 2, like every other error of the command; ``--help`` shows the usage."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from prism_lm import __version__

    parser = _Parser(prog="prism", formatter_class=_Help,
                                     description="PRISM white-box transformer: train, evaluate, analyse.")
    parser.add_argument("--version", action="version", version=f"prism-lm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_demo, _add_data, _add_train, _add_eval_and_sample, _add_analysis, _add_bench, _add_sweep,
                _add_export):
        add(sub)
    return parser


def _add_demo(sub) -> None:
    """prism demo"""
    p = _command(sub, "demo", "offline CPU demo: data, a PRISM and a GPT, evaluation, samples, report", _demo)
    p.add_argument("--out", default=None, help="new output directory (None: demo-runs/<timestamp>)")
    p.add_argument("--no-analysis", action="store_true", help="skip the attention analysis reports")


def _add_data(sub) -> None:
    """prism data prepare | inspect | verify"""
    data = sub.add_parser("data", help="prepare, inspect and verify token shards", formatter_class=_Help)
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    p = _command(data_sub, "prepare", "tokenize sources into uint16 shards + manifest.json", _data_prepare)
    p.add_argument("--source", action="append", required=True,
                   help="a path, directory, glob, 'embedded[:N[:SEED]]', 'synthetic:TASK:N[:key=value,...]' "
                        "or hub name (repeatable)")
    p.add_argument("--out", required=True, help="output directory (new, or one prepared from the same inputs)")
    p.add_argument("--val-fraction", type=FRACTION, default=0.01, help="fraction of documents in the val split")
    p.add_argument("--max-docs", type=COUNT, default=None, help="stop after this many documents (None: all)")
    p.add_argument("--processes", type=WORKERS, default=None, help="tokenizer processes (None: all cores, at most 8)")
    p.add_argument("--workers", dest="processes", type=WORKERS, action=_Deprecated, new="--processes",
                   help=argparse.SUPPRESS)
    p.add_argument("--compact-vocab", action="store_true",
                   help="renumber to the GPT-2 ids the corpus uses (small models on small corpora)")
    p = _command(data_sub, "inspect", "counts per split, a decoded sample, annotation statistics", _data_inspect)
    p.add_argument("dir", help="a prepared data directory")
    p = _command(data_sub, "verify", "check every shard against its manifest (sizes, sha256, token ids)",
                 _data_verify)
    p.add_argument("dir", help="a prepared data directory")


def _add_train(sub) -> None:
    """prism train"""
    p = _command(sub, "train", "train a model (torchrun for several processes)", _train)
    p.add_argument("config", nargs="?", default=None, help="a shipped config name or a TOML file")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    p.add_argument("--resume", default=None, metavar="auto|never|PATH",
                   help="auto: continue from the newest checkpoint of run.out_dir that verifies (else a verified "
                        "best; none: refused); never: start over, the run so far kept in previous-N/; PATH: "
                        "from that checkpoint")
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume even though the config differs from the run's in a way that breaks exactness "
                        "(the change is recorded in config_changes.jsonl)")


def _add_eval_and_sample(sub) -> None:
    """prism eval, prism sample"""
    p = _command(sub, "eval", "loss and perplexity over a whole split, per context length", _eval)
    _checkpoint_arg(p)
    _data_arg(p)
    p.add_argument("--split", default="val", help="which split to score")
    p.add_argument("--context", type=POSITIONS, nargs="+", default=None,
                   help="context lengths to score at (None: the model's block size)")
    p.add_argument("--batch-size", type=BATCH, default=8, help="windows per forward pass")
    _device_arg(p)
    _eval_set_arg(p)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")

    p = _command(sub, "sample", "generate text from a checkpoint", _sample)
    _checkpoint_arg(p)
    p.add_argument("--prompt", default="", help="text prompt, encoded with the checkpoint's own tokenizer (token "
                   "ids for a model without one); empty starts from <|endoftext|>")
    p.add_argument("--max-new-tokens", type=NEW_TOKENS, default=200, help="tokens to generate at most")
    p.add_argument("--temperature", type=NON_NEGATIVE, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=TOP_K, default=200, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=PROBABILITY, default=None, help="nucleus sampling: the smallest set with this mass")
    p.add_argument("--num-samples", type=SAMPLES, default=1, help="independent samples, separated by ---")
    p.add_argument("--seed", type=SEED, default=1337, help="sampling seed")
    _device_arg(p)
    _eval_set_arg(p)


def _add_analysis(sub) -> None:
    """prism analyze, prism explore"""
    p = _command(sub, "analyze", "figures and head statistics: report.md, report.html, report.json", _analyze)
    _checkpoint_arg(p)
    _data_arg(p, "prepared data directory (val split; train if val is empty)")
    p.add_argument("--out", required=True, help="new output directory")
    p.add_argument("--max-windows", type=WINDOWS, default=64,
                   help="windows of block_size tokens for head statistics (spread evenly over the split)")
    p.add_argument("--reference", type=_reference, action="append", default=[], metavar="LABEL=VALUE",
                   help="a labelled horizontal line on the loss plot (repeatable)")
    p.add_argument("--layer", type=INDEX, default=None, help="layer for the probe figures (None: the last)")
    p.add_argument("--head", type=INDEX, default=0, help="head for the signal/noise map figure")
    p.add_argument("--probe", default=None, help="probe text (None: the paper's frog/key/door sentence)")
    p.add_argument("--target", default=None, help="target word of the probe (None: its last word)")
    _device_arg(p)
    _eval_set_arg(p)

    p = _command(sub, "ablate", "what the model loses when λ is changed or streams and heads are silenced", _ablate)
    _checkpoint_arg(p)
    _data_arg(p)
    p.add_argument("--lambda", dest="lambdas", type=FINITE, nargs="+", default=None, metavar="LAMBDA",
                   help="evaluation-time λ values, every layer (None: 0, 0.1 and 1 for kinds with a λ)")
    p.add_argument("--stream", default=None, help="silence this stream (None: each stream in turn)")
    p.add_argument("--heads", nargs="+", default=None, metavar="L.H",
                   help="zero these heads, each LAYER.HEAD (in --stream, default the first) or LAYER.STREAM.HEAD")
    p.add_argument("--per-layer", action="store_true", help="silence the stream one layer at a time")
    p.add_argument("--max-windows", type=WINDOWS, default=32,
                   help="windows of block_size tokens to measure on (spread evenly over the split)")
    _device_arg(p)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--out", default=None, help="a new folder for ablate.md, ablate.json and the λ figure")

    p = _command(sub, "explore", "one self-contained page to look at every head's attention on a text", _explore)
    p.add_argument("checkpoints", nargs="+", metavar="checkpoint",
                   help="checkpoint or run directory; give two (PRISM and its baseline) to see them side by side")
    p.add_argument("--text", default=None, help="the text to look at (None: a short story with a recall)")
    p.add_argument("--out", required=True, help="the new HTML file")
    _device_arg(p)
    _eval_set_arg(p)


def _add_bench(sub) -> None:
    """prism bench train | decode"""
    bench = sub.add_parser("bench", help="throughput: JSON lines with tokens/s, step time, MFU, peak memory",
                           formatter_class=_Help)
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="COMMAND")
    for name, text in (("train", "training steps (forward, backward, AdamW) on random tokens"),
                       ("decode", "greedy decoding from a random prompt, with each kind of KV cache and without")):
        p = _command(bench_sub, name, text, _bench)
        p.add_argument("config", nargs="?", default=None,
                       help="config name or TOML path, the model's shape (None: prism-50m-tinystories)")
        p.add_argument("--config", dest="config_option", default=None, action=_Deprecated, new="the positional NAME",
                       help=argparse.SUPPRESS)
        p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override a config value")
        p.add_argument("--attention", nargs="+", choices=list(ATTENTION_KINDS), default=list(ATTENTION_KINDS),
                       help="attention kinds to measure at the config's dimensions")
        _device_arg(p)
        p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                       help="auto: bf16 on CUDA, fp32 on CPU")
        if name == "train":
            p.add_argument("--batch-size", type=BATCH, default=None, help="None: the config's run.batch_size")
            p.add_argument("--steps", type=STEPS, default=10, help="timed steps")
            p.add_argument("--warmup", type=WARMUP, default=3, help="untimed steps first (compilation, allocator)")
            p.add_argument("--path", nargs="+", choices=["fast", "eager"], default=["fast", "eager"],
                           help="attention paths: SDPA (fast) and the written-out softmax (eager)")
            p.add_argument("--loss-chunk", type=CHUNK, nargs="+", default=None,
                           help="LM-head chunk sizes to measure (0 = full logits; None: run.loss_chunk)")
            p.add_argument("--compile", action="store_true", help="torch.compile the model")
        else:
            p.add_argument("--batch-size", type=BATCH, nargs="+", default=[1], help="batch sizes to measure")
            p.add_argument("--prompt-len", type=POSITIONS, default=16, help="random prompt length")
            p.add_argument("--new-tokens", type=POSITIONS, default=256, help="tokens to generate")
            p.add_argument("--cache", nargs="+", choices=["dynamic", "static", "compiled", "none"],
                           default=["dynamic", "none"],
                           help="KV cache: growing, fixed-shape, fixed-shape with a compiled step (CUDA graphs "
                                "on CUDA), or none (recompute the prefix)")


def _add_sweep(sub) -> None:
    """prism sweep run | report | pack"""
    sweep = sub.add_parser("sweep", help="experiments: arms x grid x seeds, run locally or on Slurm, and reported",
                           formatter_class=_Help)
    sweep_sub = sweep.add_subparsers(dest="sweep_command", required=True, metavar="COMMAND")
    p = _command(sweep_sub, "run", "run (or continue) every unfinished run of an experiment file", _sweep_run)
    p.add_argument("file", help="an experiment TOML (see experiments/); a suite includes several")
    p.add_argument("--out", required=True, help="the sweep folder it writes (runs, plan, prepared data)")
    p.add_argument("--workers", type=WORKERS, default=None,
                   help="runs at a time (None: local, one per CPU with one thread each; Slurm, all at once)")
    p.add_argument("--executor", choices=["local", "slurm", "submitit-local"], default="local",
                   help="local processes; Slurm through submitit; or submitit's local executor (the Slurm "
                        "submission code run as local processes)")
    p.add_argument("--extend", action="store_true", help="add this file's runs to a folder holding other runs")
    p = _command(sweep_sub, "report",
                 "results table (CSV, Parquet) and report (md, html, json) with seed-level intervals", _sweep_report)
    p.add_argument("dir", help="a sweep folder (what sweep run --out wrote), or a committed table (its sweep.json "
                               "and results.csv) to recompute by today's rules")
    p.add_argument("--out", default=None, help="a new folder for the report (None: DIR/report, rewritten each time)")
    p.add_argument("--overwrite", action="store_true", help="write into an --out that already holds files")
    p = _command(sweep_sub, "pack", "copy a sweep's plan and finished results without checkpoints or data, to "
                 "continue it elsewhere (sweep run --out PACK) or report it", _sweep_pack)
    p.add_argument("dir", help="a sweep folder (what sweep run --out wrote); it may still be running")
    p.add_argument("--out", required=True, help="a new folder for the pack")


def _add_export(sub) -> None:
    """prism export hf, prism import-official"""
    export = sub.add_parser("export", help="write a checkpoint in another ecosystem's format", formatter_class=_Help)
    export_sub = export.add_subparsers(dest="export_command", required=True, metavar="FORMAT")
    p = _command(export_sub, "hf", "a folder that transformers' AutoModelForCausalLM / AutoTokenizer load offline",
                 _export_hf)
    _checkpoint_arg(p)
    p.add_argument("--out", default=None, help="new output folder (required)")
    p.add_argument("legacy_out", nargs="?", default=None, help=argparse.SUPPRESS)

    p = _command(sub, "import-official", "convert an official PRISM ckpt.pt into a prism-lm checkpoint",
                 _import_official)
    p.add_argument("checkpoint", help="the official ckpt.pt (read with weights_only=True)")
    p.add_argument("--out", default=None, help="new directory for model.safetensors + config.json (required)")
    p.add_argument("legacy_out", nargs="?", default=None, help=argparse.SUPPRESS)

    p = _command(sub, "import-crate", "convert a CRATE language model's ckpt.pt (nanoGPT format) into a prism-lm "
                 "checkpoint", _import_crate)
    p.add_argument("checkpoint", help="CRATE's ckpt.pt: 'model' and 'model_args' (read with weights_only=True)")
    p.add_argument("legacy_out", nargs="?", default=None, metavar="OUT", help="new directory (or --out)")
    p.add_argument("--out", default=None, help="new directory for model.safetensors + config.json")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and --version (0), or argparse's one-line error (2): a status, like the rest
        return exc.code if isinstance(exc.code, int) else 2
    try:
        status = args.func(args)
    except PrismError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permissions, a path that went away: one line naming the path
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
