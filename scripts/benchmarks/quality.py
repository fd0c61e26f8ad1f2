"""Quality: does the default command learn real cohorts? (issue 11, item 5)

The other sections time the pipeline; this one asks what a new user gets out of the box.
For each set of the quality root (public time-series sets with their official train/test
split, see its README.md) it runs, as subprocesses and exactly as a user types them,

    python train.py data=table data.measurements=<set>/train_measurements.csv.gz \\
        data.labels=<set>/train_labels.csv hydra.run.dir=<out>/<set>/run report.enabled=false
    python scripts/predict.py checkpoint=<best.ckpt> \\
        input=<set>/test_measurements.csv.gz output=<out>/<set>/predictions.csv

times both, and only then reads the test labels to score accuracy and AUROC. It also
trains on the bundled synthetic cohort, whose report compares the CNN with two baselines.
The figures are set beside the peers measured on the same kind of machine (peers.csv,
and the published InceptionTime accuracy from the root's README) and checked against
issue 11's "done when" targets.

    python scripts/benchmarks/quality.py [--sets A,B] [--root ../shared/quality]
        [--out-dir outputs/quality] [--doc docs/QUALITY.md] [--no-doc] [--jobs 1]
        [--report] [--skip-synthetic] [--timeout S] [-- extra hydra overrides...]
    python scripts/benchmark.py --only quality          # every set + synthetic, writes the doc
    python scripts/benchmarks/quality.py --merge a/quality.json b/quality.json --doc docs/QUALITY.md
    python scripts/benchmarks/quality.py --spread s1/quality.json s2/quality.json ...

``--spread`` sets side by side runs of the same sets that differ only in their seed
(``-- seed=N``): a test table of 20 patients scores accuracy in steps of 0.05, and a seed moves a
patient or two across 0.5, so one run cannot say whether a set meets a target by a
patient. It prints, per set, every run's accuracy, their mean and range, and in how many
runs each target passes.

Extra overrides (e.g. ``-- model=inceptiontime``) go to every train.py call. Writes
``<out-dir>/quality.json`` (everything) and, unless --no-doc, ``docs/QUALITY.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = ROOT.parent / "shared" / "quality"  # ../shared/quality from the repository
SET_FILES = (
    "train_measurements.csv.gz",
    "train_labels.csv",
    "test_measurements.csv.gz",
    "test_labels.csv",
)
# peers.csv name -> the short name used in tables
PEERS = {"MiniRocket": "MiniRocket", "LogReg-flat": "LogReg", "HGB-summary": "HGB"}
MARGIN = 0.02  # how far below majority / published InceptionTime accuracy is still a pass
# Peer figures carry 4 decimals: compare at that precision, so a tie is not a loss.
TOLERANCE = 5e-5
# (patients x steps, seconds): "within 3 minutes for up to 1,000 patients x 500 steps,
# within 20 minutes for the 3,601-patient x 500-step set (FordA)"
TIME_LIMITS = ((1_000 * 500, 180.0), (3_601 * 500, 1_200.0))
SYNTHETIC = "synthetic"
QUICK_SET = "Tecator"  # benchmark.py --quick: small (172 x 100 steps), trained in seconds
CRITERIA = {
    "a": "accuracy >= the LogReg peer's, on every set",
    "b": f"accuracy >= majority rate - {MARGIN}, on every set",
    "c": "mean accuracy >= MiniRocket's mean over the same sets",
    "d": f"accuracy >= published InceptionTime - {MARGIN}, where one is listed",
    "e": "synthetic cohort: CNN test AUROC >= the better of its two baselines",
    "f": "train + predict within 180 s (<= 1,000 patients x 500 steps), 1,200 s (FordA size)",
}


@dataclass
class Options:
    root: Path = DEFAULT_ROOT
    sets: list[str] | None = None  # None: every set in the root
    out_dir: Path = ROOT / "outputs" / "quality"
    doc: Path | None = ROOT / "docs" / "QUALITY.md"
    jobs: int = 1
    report: bool = False
    synthetic: bool = True
    timeout: float | None = None
    overrides: list[str] = field(default_factory=list)
    command: str = ""


# ---------------------------------------------------------------------------- the root


def discover_sets(root: Path) -> list[str]:
    """The set folders of the quality root: those holding the four tables, by name."""
    return sorted(
        (p.name for p in root.iterdir() if all((p / f).is_file() for f in SET_FILES)),
        key=str.lower,
    )


def describe_sets(root: Path) -> dict[str, dict]:
    """Per set, from meta.json: sizes, channels, lengths and the test majority rate."""
    meta_file = root / "meta.json"
    if not meta_file.is_file():
        return {}
    out = {}
    for name, meta in json.loads(meta_file.read_text()).items():
        positive = meta["pos_test"] / meta["n_test"]
        out[name] = {
            "n_train": meta["n_train"],
            "n_test": meta["n_test"],
            "channels": meta["channels"],
            "length_min": meta["length_min"],
            "length_max": meta["length_max"],
            "majority": max(positive, 1 - positive),
        }
    return out


def read_peers(root: Path) -> dict[str, dict[str, dict]]:
    """``{set: {peer: {accuracy, auroc, wall_s}}}`` from peers.csv, for the peers we show."""
    peers_file = root / "peers.csv"
    if not peers_file.is_file():
        return {}
    table = pd.read_csv(peers_file)
    table = table[table["peer"].isin(PEERS)]
    out: dict[str, dict[str, dict]] = {}
    for row in table.itertuples(index=False):
        out.setdefault(row.dataset, {})[PEERS[row.peer]] = {
            "accuracy": float(row.accuracy),
            "auroc": float(row.auroc),
            "wall_s": float(row.wall_s),
        }
    return out


def read_published_inceptiontime(readme: Path) -> dict[str, float | None]:
    """The "InceptionTime publ." column of the README's peers table: {set: accuracy or None}."""
    if not readme.is_file():
        return {}
    out: dict[str, float | None] = {}
    column = None
    for line in readme.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.lstrip().startswith("|"):
            column = None  # the table ended
        elif column is None:
            hits = [i for i, c in enumerate(cells) if "inceptiontime" in c.lower()]
            column = hits[0] if hits else None
        elif len(cells) > column and not set(cells[0]) <= set("-: "):
            out[cells[0]] = _number(cells[column])
    return out


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # '–', 'refused', ...


# ---------------------------------------------------------------------------- commands


def train_command(set_dir: Path, run_dir: Path, report: bool, overrides: list[str]) -> list[str]:
    """The default training command on a set's train tables."""
    command = [
        sys.executable,
        "train.py",
        "data=table",
        f"data.measurements={set_dir / 'train_measurements.csv.gz'}",
        f"data.labels={set_dir / 'train_labels.csv'}",
        f"hydra.run.dir={run_dir}",
    ]
    if not report:
        command.append("report.enabled=false")
    return command + list(overrides)


def synthetic_command(run_dir: Path, overrides: list[str]) -> list[str]:
    """The default training command on the bundled synthetic cohort (report on: baselines)."""
    return [sys.executable, "train.py", f"hydra.run.dir={run_dir}", *overrides]


def predict_command(checkpoint: Path, measurements: Path, output: Path) -> list[str]:
    return [
        sys.executable,
        "scripts/predict.py",
        f"checkpoint={checkpoint}",
        f"input={measurements}",
        f"output={output}",
    ]


def run_timed(command: list[str], log_file: Path, timeout: float | None = None) -> dict:
    """Run ``command`` from the repository root; its wall seconds, exit code and status.

    Both output streams go to ``log_file``. The status is "ok", or the last line the
    command wrote to stderr (the one-line error, or a traceback's last line).
    """
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as err:
        code, stdout, stderr = None, _text(err.stdout), _text(err.stderr)
        stderr += f"\ntimed out after {timeout:g} s"
    seconds = time.perf_counter() - started
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text(f"$ {shlex.join(command)}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    status = "ok" if code == 0 else last_line(stderr) or f"exit status {code}"
    return {"seconds": seconds, "returncode": code, "status": status}


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def last_line(text: str) -> str:
    """The last non-blank line, progress-bar redraws (carriage returns) split apart."""
    lines = [line.strip() for line in re.split(r"[\r\n]+", text) if line.strip()]
    return lines[-1] if lines else ""


def find_checkpoint(run_dir: Path) -> Path | None:
    """metrics.json's "checkpoint" if set, else <run>/checkpoints/best.ckpt; None if neither."""
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        named = json.loads(metrics_file.read_text()).get("checkpoint")
        if named:
            path = Path(named)
            return path if path.is_absolute() else ROOT / path
    best = run_dir / "checkpoints" / "best.ckpt"
    return best if best.is_file() else None


# ---------------------------------------------------------------------------- scoring


def score_predictions(predictions_file: Path, labels_file: Path) -> dict:
    """Accuracy and AUROC of a predictions file against a labels table (id, label).

    Ids are joined as strings. Accuracy is over every labelled patient, one without a
    prediction counting as wrong; AUROC is over the patients that have a probability
    (None when they share one outcome).
    """
    labels = pd.read_csv(labels_file, dtype=str)
    id_col, label_col = labels.columns[:2]
    predictions = pd.read_csv(predictions_file, dtype=str)
    predictions = predictions.rename(columns={predictions.columns[0]: "_id"})
    joined = labels.merge(predictions, how="left", left_on=id_col, right_on="_id")
    probability = pd.to_numeric(joined["probability"])
    scored = probability.notna()
    truth = joined[label_col].astype(float).astype(int)
    correct = scored & (pd.to_numeric(joined["predicted_label"]) == truth)
    both_classes = truth[scored].nunique() == 2
    return {
        "accuracy": float(correct.mean()),
        "auroc": float(roc_auc_score(truth[scored], probability[scored])) if both_classes else None,
        "n_labelled": int(len(labels)),
        "n_scored": int(scored.sum()),
        "n_missing": int((~scored).sum()),
        "n_unlabelled_predictions": int((~predictions["_id"].isin(labels[id_col])).sum()),
        "majority": float(truth.value_counts(normalize=True).max()),
    }


# ---------------------------------------------------------------------------- one set


def run_set(name: str, opts: Options) -> dict:
    """Train, find the checkpoint, predict, then score one set; a failure stops the set only."""
    set_dir = opts.root / name
    out = opts.out_dir / name
    shutil.rmtree(out, ignore_errors=True)  # a rerun starts clean (predict will not overwrite)
    run_dir = out / "run"
    result: dict = {"status": "ok", "stage": None, "run_dir": str(run_dir)}

    command = train_command(set_dir, run_dir, opts.report, opts.overrides)
    result["train_command"] = shlex.join(command)
    train = run_timed(command, out / "train.log", opts.timeout)
    result["train_s"] = train["seconds"]
    if train["status"] != "ok":
        return result | {"status": train["status"], "stage": "train"}

    try:
        checkpoint = find_checkpoint(run_dir)
    except (OSError, ValueError) as err:  # an unreadable metrics.json
        return result | {"status": f"metrics.json unreadable: {err}", "stage": "checkpoint"}
    if checkpoint is None:
        return result | {"status": "no checkpoint written", "stage": "checkpoint"}
    result["checkpoint"] = str(checkpoint)

    predictions = out / "predictions.csv"
    command = predict_command(checkpoint, set_dir / "test_measurements.csv.gz", predictions)
    result["predict_command"] = shlex.join(command)
    predict = run_timed(command, out / "predict.log", opts.timeout)
    result["predict_s"] = predict["seconds"]
    if predict["status"] != "ok":
        return result | {"status": predict["status"], "stage": "predict"}

    # the test labels are read only now, after the predictions are written
    try:
        return result | score_predictions(predictions, set_dir / "test_labels.csv")
    except (OSError, ValueError, KeyError) as err:  # e.g. a predictions file lacking a column
        return result | {"status": f"{type(err).__name__}: {err}", "stage": "score"}


def run_synthetic(opts: Options) -> dict:
    """The default command on the synthetic cohort; CNN and baseline test AUROC from its report."""
    out = opts.out_dir / SYNTHETIC
    shutil.rmtree(out, ignore_errors=True)
    run_dir = out / "run"
    command = synthetic_command(run_dir, opts.overrides)
    train = run_timed(command, out / "train.log", opts.timeout)
    result = {
        "status": train["status"],
        "train_command": shlex.join(command),
        "train_s": train["seconds"],
        "run_dir": str(run_dir),
    }
    if train["status"] == "ok":
        try:
            result |= read_synthetic_metrics(run_dir / "metrics.json")
        except (OSError, ValueError, KeyError) as err:
            result["status"] = f"metrics.json unreadable: {type(err).__name__}: {err}"
    return result


def read_synthetic_metrics(metrics_file: Path) -> dict:
    """Test AUROC of the CNN and of each baseline in a training run's metrics.json."""
    record = json.loads(metrics_file.read_text())
    baselines = {
        name: values.get("test/auroc") for name, values in record.get("baselines", {}).items()
    }
    return {"cnn_auroc": record["metrics"].get("test/auroc"), "baselines_auroc": baselines}


# ---------------------------------------------------------------------------- targets


def at_least(value: float | None, bound: float | None) -> bool | None:
    """value >= bound at the peers' precision; None when there is no bound to meet."""
    if bound is None:
        return None
    return value is not None and value + TOLERANCE >= bound


def verdict(passed: bool | None, text: str) -> dict:
    return {"pass": passed, "text": text}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def time_limit(n_train: int | None, length: int | None) -> float | None:
    """Seconds allowed for train + predict on a set of this size; None beyond the targets."""
    if n_train is None or length is None:
        return None
    return next((s for size, s in TIME_LIMITS if n_train * length <= size), None)


def check_set(result: dict) -> dict[str, dict]:
    """Criteria (a), (b), (d), (f) for one set's result (with its info, peers, published)."""
    acc = result.get("accuracy")
    logreg = result.get("peers", {}).get("LogReg", {}).get("accuracy")
    majority = result.get("majority")
    published = result.get("inceptiontime_published")
    out = {
        "a": verdict(at_least(acc, logreg), f"{_fmt(acc)} vs LogReg {_fmt(logreg)}"),
        "b": verdict(
            at_least(acc, None if majority is None else majority - MARGIN),
            f"{_fmt(acc)} vs majority {_fmt(majority)} - {MARGIN}",
        ),
        "d": verdict(
            at_least(acc, None if published is None else published - MARGIN),
            f"{_fmt(acc)} vs InceptionTime {_fmt(published)} - {MARGIN}"
            if published is not None
            else "no published figure",
        ),
    }
    limit = time_limit(result.get("n_train"), result.get("length_max"))
    seconds = (
        result["train_s"] + result["predict_s"] if result.get("accuracy") is not None else None
    )
    out["f"] = verdict(
        None if limit is None else seconds is not None and seconds <= limit,
        f"{_fmt(seconds, 0)} s vs {limit:g} s"
        if limit is not None
        else "larger than the targets' sizes",
    )
    if acc is None:
        for key in ("a", "b", "d", "f"):
            if out[key]["pass"] is not None:
                out[key] = verdict(False, f"no result ({result.get('stage')} failed)")
    return out


def check_targets(results: dict[str, dict], synthetic: dict | None) -> dict:
    """Every criterion per set and overall; overall "all" passes only if each one does."""
    per_set = {name: check_set(result) for name, result in results.items()}
    overall = {}
    for key in ("a", "b", "d", "f"):
        judged = {n: c[key]["pass"] for n, c in per_set.items() if c[key]["pass"] is not None}
        failed = sorted(n for n, ok in judged.items() if not ok)
        overall[key] = verdict(
            not failed if judged else None,
            f"{len(judged) - len(failed)} of {len(judged)} sets"
            + (f"; failed: {', '.join(failed)}" if failed else ""),
        )
    overall["c"] = check_mean(results)
    overall["e"] = check_synthetic(synthetic)
    overall = {k: overall[k] for k in sorted(overall)}
    overall["all"] = check_all(overall)
    return {"per_set": per_set, "overall": overall}


def check_all(overall: dict[str, dict]) -> dict:
    """Every criterion passes; (d) may be n/a (no published figure), the others must be checked."""
    failed = [f"({k})" for k, v in overall.items() if v["pass"] is False]
    unchecked = [f"({k})" for k, v in overall.items() if v["pass"] is None and k != "d"]
    if failed:
        return verdict(False, f"failing: {', '.join(failed)}")
    if unchecked:
        return verdict(None, f"not checked: {', '.join(unchecked)}; the rest pass")
    return verdict(True, "every criterion passes")


def mean_accuracies(results: dict[str, dict]) -> dict:
    """Mean accuracy of patientcnn and of each peer over the sets with a result of ours."""
    done = [r for r in results.values() if r.get("accuracy") is not None]
    out = {
        "n_sets": len(results),
        "n_with_result": len(done),
        "patientcnn": _mean(r["accuracy"] for r in done),
    }
    for peer in PEERS.values():
        out[peer] = _mean(r.get("peers", {}).get(peer, {}).get("accuracy") for r in done)
        out[f"{peer}_all_sets"] = _mean(
            r.get("peers", {}).get(peer, {}).get("accuracy") for r in results.values()
        )
    return out


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def check_mean(results: dict[str, dict]) -> dict:
    """(c): our mean accuracy against MiniRocket's, over the same sets; every set must count."""
    means = mean_accuracies(results)
    ours, peer = means["patientcnn"], means["MiniRocket"]
    missing = means["n_sets"] - means["n_with_result"]
    text = f"{_fmt(ours)} vs MiniRocket {_fmt(peer)} over {means['n_with_result']} sets"
    if missing:
        return verdict(
            False,
            f"{missing} set(s) without a result; {text} (MiniRocket over all "
            f"{means['n_sets']} sets run: {_fmt(means['MiniRocket_all_sets'])})",
        )
    return verdict(at_least(ours, peer), text)


def check_synthetic(synthetic: dict | None) -> dict:
    """(e): the CNN's test AUROC on the synthetic cohort against its better baseline."""
    if synthetic is None:
        return verdict(None, "synthetic cohort not run")
    if synthetic.get("status") != "ok":
        return verdict(False, f"no result ({synthetic.get('status')})")
    cnn = synthetic.get("cnn_auroc")
    baselines = {k: v for k, v in synthetic.get("baselines_auroc", {}).items() if v is not None}
    if cnn is None or not baselines:
        return verdict(False, "metrics.json lacks the CNN's or the baselines' test AUROC")
    name, best = max(baselines.items(), key=lambda kv: kv[1])
    return verdict(cnn >= best, f"CNN {cnn:.3f} vs {name} {best:.3f}")


# ---------------------------------------------------------------------------- the run


def run_benchmark(opts: Options) -> dict:
    """Run the chosen sets (and the synthetic cohort), write quality.json and the doc."""
    root = opts.root
    in_root = discover_sets(root)
    names = list(dict.fromkeys(opts.sets)) if opts.sets else in_root
    unknown = sorted(set(names) - set(in_root))
    if unknown:
        raise SystemExit(f"error: no set {', '.join(unknown)} in {root}; found {in_root}")
    described, peers = describe_sets(root), read_peers(root)
    published = read_published_inceptiontime(root / "README.md")
    record = header(opts, root, in_root, names)
    print(f"quality: {len(names)} set(s) from {root}, jobs={opts.jobs}", flush=True)

    def one(i: int, name: str) -> dict:
        print(f"[{i}/{len(names)}] {name} ...", flush=True)
        result = {
            **described.get(name, {}),
            "peers": peers.get(name, {}),
            "inceptiontime_published": published.get(name),
            **run_set(name, opts),
        }
        print(progress_line(i, len(names), name, result), flush=True)
        return result

    with ThreadPoolExecutor(max_workers=opts.jobs) as pool:
        futures = {name: pool.submit(one, i, name) for i, name in enumerate(names, 1)}
        record["sets"] = {name: future.result() for name, future in futures.items()}

    synthetic = None
    if opts.synthetic:
        print(f"[{SYNTHETIC}] default command, report on ...", flush=True)
        synthetic = run_synthetic(opts)
        print(synthetic_line(synthetic), flush=True)
    record["synthetic"] = synthetic
    record["means"] = mean_accuracies(record["sets"])
    record["targets"] = check_targets(record["sets"], synthetic)
    record["machine"]["loadavg_end"] = _loadavg()

    out = opts.out_dir / "quality.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_finite(record), indent=2) + "\n")
    print(f"wrote {out}")
    if opts.doc is not None:
        doc = opts.doc
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(render_doc(record))
        print(f"wrote {doc}")
    for key, value in record["targets"]["overall"].items():
        print(f"  ({key}) {_pass(value['pass'])}: {value['text']}")
    return record


def header(opts: Options, root: Path, in_root: list[str], names: list[str]) -> dict:
    """When, how, where and on what code the benchmark ran."""
    return {
        "benchmark": "quality",
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": opts.command,
        "overrides": list(opts.overrides),
        "report": opts.report,
        "jobs": opts.jobs,
        "timeout_s": opts.timeout,
        "root": str(root),
        "sets_in_root": in_root,
        "sets_run": names,
        "subset": sorted(names) != sorted(in_root),
        "git": git_state(),
        "machine": machine_info(),
    }


def git_state() -> dict:
    """The commit benchmarked, and whether the working tree differed from it."""

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "branch": git("rev-parse", "--abbrev-ref", "HEAD") or None,
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def cpu_description() -> dict:
    """The CPU's model name and the vector instructions torch's kernels use on it (AVX2,
    AVX512, ...). Both matter: the same code gives other seconds on another CPU, and, since
    the order of floating-point sums differs, predictions that can differ in the last
    digits, enough to move a patient across 0.5 on a small test table."""
    import torch

    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return {"cpu": name, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def machine_info() -> dict:
    import torch  # only for its version and thread count, which train.py inherits

    return {
        **cpu_description(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "loadavg_start": _loadavg(),
    }


def _loadavg() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _finite(value: object) -> object:
    """The record with NaN/inf as null, so quality.json is standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _pass(passed: bool | None) -> str:
    return "n/a" if passed is None else "PASS" if passed else "FAIL"


# ---------------------------------------------------------------------------- output


def progress_line(i: int, n: int, name: str, result: dict) -> str:
    """One compact stdout line per finished set."""
    head = f"[{i}/{n}] {name:<28}"
    if result.get("accuracy") is None:
        seconds = result.get("train_s", 0) + result.get("predict_s", 0)
        return f"{head} {result['stage']} failed after {seconds:.0f} s: {result['status']}"
    peers = result.get("peers", {})
    missing = f"  ({result['n_missing']} without prediction)" if result["n_missing"] else ""
    return (
        f"{head} acc {_fmt(result['accuracy'])}  AUROC {_fmt(result['auroc'])}  "
        f"train {result['train_s']:.0f} s  predict {result['predict_s']:.0f} s  | "
        f"majority {_fmt(result.get('majority'))}  "
        + "  ".join(f"{p} {_fmt(peers.get(p, {}).get('accuracy'))}" for p in PEERS.values())
        + f"  IT {_fmt(result.get('inceptiontime_published'))}{missing}"
    )


def synthetic_line(synthetic: dict) -> str:
    if synthetic.get("cnn_auroc") is None:
        return f"[{SYNTHETIC}] failed after {synthetic['train_s']:.0f} s: {synthetic['status']}"
    baselines = "  ".join(f"{k} {_fmt(v)}" for k, v in synthetic.get("baselines_auroc", {}).items())
    return (
        f"[{SYNTHETIC}] CNN test AUROC {_fmt(synthetic['cnn_auroc'])}  | {baselines}  "
        f"({synthetic['train_s']:.0f} s)"
    )


def render_doc(record: dict) -> str:
    """docs/QUALITY.md: how it was run, results beside the peers, then the targets."""
    return "\n".join(
        [
            *doc_header(record),
            *doc_results(record),
            *doc_synthetic(record.get("synthetic")),
            *doc_targets(record),
        ]
    )


def doc_header(record: dict) -> list[str]:
    machine, git = record["machine"], record["git"]
    names, in_root = record["sets_run"], record["sets_in_root"]
    if record["subset"]:
        scope = (
            f"**{len(names)} of the {len(in_root)} sets** ({', '.join(names)}): means and "
            "the MiniRocket mean compared in (c) are over these sets only"
        )
    else:
        scope = f"all {len(in_root)} sets of the quality root"
    jobs = (
        "1 set at a time (seconds comparable with the peers')"
        if record["jobs"] == 1
        else f"{record['jobs']} sets at once: they shared the cores, so **seconds are not "
        "comparable** with the peers' or with a --jobs 1 run, and (f) is not meaningful"
    )
    report = (
        "on"
        if record["report"]
        else "off (`report.enabled=false`, to save time: the report is written after "
        "training and does not change the model or its predictions); the synthetic run keeps "
        "it, for its baselines"
    )
    load = [
        " / ".join(f"{x:.2f}" for x in v) if v else "?"
        for v in (machine.get("loadavg_start"), machine.get("loadavg_end"))
    ]
    verdict_all = record["targets"]["overall"]["all"]
    return [
        "# Quality benchmark",
        "",
        "Written by `scripts/benchmarks/quality.py` (issue 11, item 5); rerun it rather than "
        "editing this file.",
        "",
        f"- date: {record['date']}",
        f"- command: `{record['command']}`",
        "- extra overrides (given to every train.py call): "
        + (f"`{' '.join(record['overrides'])}`" if record["overrides"] else "none"),
        f"- git commit: {git['commit']} on {git['branch']}"
        + (" (with uncommitted changes)" if git["dirty"] else ""),
        f"- machine: {machine['cpu_count']} CPU cores ({machine['cpus_usable']} usable"
        + (
            f"; {machine['cpu']}, torch kernels {machine['cpu_capability']}"
            if machine.get("cpu")
            else ""
        )
        + "), "
        f"torch {machine['torch']} with {machine['torch_threads']} threads per process, "
        f"Python {machine['python']}; load average (1, 5, 15 min) {load[0]} at the start, "
        f"{load[1]} at the end",
        f"- sets: {scope}",
        f"- jobs: {jobs}",
        f"- evaluation report: {report}",
        f"- issue 11 targets: **{_pass(verdict_all['pass'])}** ({verdict_all['text']}; "
        "see Targets below)",
        "",
        "Each set is trained with the default command on its official train table, and "
        "its test table is scored with `scripts/predict.py` using the checkpoint the run "
        "names in metrics.json (else `checkpoints/best.ckpt`):",
        "",
        "```",
        "python train.py data=table data.measurements=<set>/train_measurements.csv.gz \\",
        "    data.labels=<set>/train_labels.csv hydra.run.dir=<out>/<set>/run"
        + ("" if record["report"] else " report.enabled=false"),
        "python scripts/predict.py checkpoint=<ckpt> input=<set>/test_measurements.csv.gz \\",
        "    output=<out>/<set>/predictions.csv",
        "```",
        "",
        "The test labels are read only after the predictions are written. Accuracy is "
        "`predicted_label` against the label over every test patient (a patient without a "
        "prediction counts as wrong); AUROC is from `probability` over the patients scored. "
        "Seconds are each command's wall time, Python start-up and data loading included. "
        "Peers (accuracy / AUROC / wall s) come from the quality root's peers.csv "
        "(MiniRocket; LogReg = logistic regression on the flattened series; HGB = gradient "
        "boosting on summary statistics), measured on the same kind of 2-core machine; the "
        "published InceptionTime accuracy is from its README ('–': none comparable).",
        "",
    ]


def doc_results(record: dict) -> list[str]:
    lines = [
        "## Results",
        "",
        "| set | N train / test | C x L | majority | patientcnn acc / AUROC | train s "
        "| predict s | MiniRocket | LogReg | HGB | InceptionTime publ. | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in record["sets"].items():
        lengths = (r.get("length_min"), r.get("length_max"))
        shape = (
            f"{r['channels']} x "
            + (f"{lengths[1]}" if lengths[0] == lengths[1] else f"{lengths[0]}-{lengths[1]}")
            if r.get("channels") is not None
            else "–"
        )
        peers = r.get("peers", {})
        cells = [
            name,
            f"{r.get('n_train', '–')} / {r.get('n_test', '–')}",
            shape,
            _fmt(r.get("majority")),
            f"**{_fmt(r.get('accuracy'))}** / {_fmt(r.get('auroc'))}",
            _fmt(r.get("train_s"), 1),
            _fmt(r.get("predict_s"), 1),
            *(
                " / ".join(
                    [
                        _fmt(peers.get(p, {}).get("accuracy")),
                        _fmt(peers.get(p, {}).get("auroc")),
                        _seconds(peers.get(p, {}).get("wall_s")),
                    ]
                )
                if p in peers
                else "–"
                for p in PEERS.values()
            ),
            _fmt(r.get("inceptiontime_published")),
            _status_cell(r),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    means = record["means"]
    lines += [
        "",
        f"Mean accuracy over the {means['n_with_result']} set(s) with a result"
        + (f" (of {means['n_sets']} run)" if means["n_with_result"] < means["n_sets"] else "")
        + f": patientcnn {_fmt(means['patientcnn'])}, "
        + ", ".join(f"{p} {_fmt(means[p])}" for p in PEERS.values())
        + ".",
        "",
    ]
    return lines


def _status_cell(result: dict) -> str:
    if result.get("accuracy") is None:
        return f"{result.get('stage')} failed: {result.get('status')}".replace("|", "/")
    if result.get("n_missing"):
        return f"ok; {result['n_missing']} test patients without a prediction (counted wrong)"
    return "ok"


def doc_synthetic(synthetic: dict | None) -> list[str]:
    lines = ["## Synthetic cohort", ""]
    if synthetic is None:
        return lines + ["Not run (--skip-synthetic).", ""]
    lines += [
        f"`{_display_command(synthetic['train_command'])}` ({synthetic['train_s']:.0f} s)",
        "",
    ]
    if synthetic.get("cnn_auroc") is None:
        return lines + [f"Failed: {synthetic['status']}", ""]
    lines += ["| model | test AUROC |", "|---|---|", f"| CNN | {_fmt(synthetic['cnn_auroc'])} |"]
    for name, value in synthetic.get("baselines_auroc", {}).items():
        lines.append(f"| {name.replace('_', ' ')} (baseline) | {_fmt(value)} |")
    return lines + [""]


def _display_command(command: str) -> str:
    """A recorded command as a user would type it: `python`, paths from the repository."""
    return command.replace(shlex.quote(sys.executable), "python", 1).replace(f"{ROOT}/", "")


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s" if value < 1 else f"{value:.1f} s"


def doc_targets(record: dict) -> list[str]:
    targets = record["targets"]
    lines = [
        '## Targets (issue 11, "done when")',
        "",
        *(f"- ({k}) {text}" for k, text in CRITERIA.items()),
        "",
        "| set | (a) >= LogReg | (b) >= majority - 0.02 | (d) >= InceptionTime - 0.02 | (f) time |",
        "|---|---|---|---|---|",
    ]
    for name, checks in targets["per_set"].items():
        cells = [f"{_pass(checks[k]['pass'])} {checks[k]['text']}" for k in ("a", "b", "d", "f")]
        lines.append(f"| {name} | " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    scope = f" (over the {len(record['sets_run'])} sets run only)" if record["subset"] else ""
    lines += ["", f"Overall{scope}:", ""]
    for key, value in targets["overall"].items():
        label = "all" if key == "all" else f"({key})"
        lines.append(f"- {label} **{_pass(value['pass'])}**: {value['text']}")
    return lines + [""]


# ---------------------------------------------------------------------------- entry points


def rows(record: dict) -> list[dict]:
    """The record as scripts/benchmark.py rows: accuracy, AUROC and seconds per set."""
    out = []

    def add(case: str, value: float | None, unit: str, status: str) -> None:
        if value is not None and math.isfinite(value):
            out.append(
                {"section": "quality", "case": case, "value": value, "unit": unit, "status": status}
            )

    for name, r in record["sets"].items():
        add(f"{name} accuracy", r.get("accuracy"), "fraction", r["status"])
        add(f"{name} AUROC", r.get("auroc"), "AUROC", r["status"])
        seconds = r.get("train_s", 0.0) + r.get("predict_s", 0.0)
        add(f"{name} train + predict", seconds, "s", r["status"])
    means = record["means"]
    add(f"mean accuracy ({means['n_with_result']} sets)", means["patientcnn"], "fraction", "ok")
    add("MiniRocket mean accuracy (same sets)", means["MiniRocket"], "fraction", "ok")
    synthetic = record.get("synthetic") or {}
    add("synthetic CNN test AUROC", synthetic.get("cnn_auroc"), "AUROC", synthetic.get("status"))
    best = max((v for v in synthetic.get("baselines_auroc", {}).values() if v), default=None)
    add("synthetic better baseline test AUROC", best, "AUROC", synthetic.get("status"))
    return out


def run(quick: bool) -> list[dict]:
    """The benchmark.py section: every set + synthetic, writing docs/QUALITY.md; with
    --quick, one small set alone (Tecator, else the smallest), no synthetic run and no doc."""
    root = DEFAULT_ROOT
    if not root.is_dir():
        print(f"   quality root {root} not found: section skipped", flush=True)
        return []
    command = "python scripts/benchmark.py --only quality" + (" --quick" if quick else "")
    opts = Options(command=command)
    if quick:
        quick_set = QUICK_SET if (root / QUICK_SET).is_dir() else smallest_set(root)
        opts.sets, opts.synthetic, opts.doc = [quick_set], False, None
        opts.out_dir = ROOT / "outputs" / "quality-quick"
    return rows(run_benchmark(opts))


def smallest_set(root: Path) -> str:
    """The set with the fewest training patients x steps (by meta.json; else the first)."""
    described = describe_sets(root)
    names = discover_sets(root)
    return min(
        names,
        key=lambda n: (
            described.get(n, {}).get("n_train", math.inf)
            * described.get(n, {}).get("length_max", 1)
        ),
    )


def parse_args(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sets", default="", help="comma-separated set names (default: all)")
    defaults = Options()
    parser.add_argument(
        "--root", type=Path, default=defaults.root, help="the quality root (../shared/quality)"
    )
    parser.add_argument("--out-dir", type=Path, default=defaults.out_dir, help="outputs/quality")
    parser.add_argument("--doc", type=Path, default=defaults.doc, help="docs/QUALITY.md")
    parser.add_argument("--no-doc", action="store_true", help="write quality.json only")
    parser.add_argument(
        "--jobs", type=int, default=1, help="sets run at once; seconds comparable only with 1"
    )
    parser.add_argument(
        "--report", action="store_true", help="keep each run's evaluation report (slower)"
    )
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds allowed per command (default: none)"
    )
    parser.add_argument(
        "overrides", nargs="*", help="after --: Hydra overrides for every train.py call"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return Options(
        root=args.root.resolve(),  # paths given on the command line: from the current folder
        sets=[s for s in args.sets.split(",") if s] or None,
        out_dir=args.out_dir.resolve(),
        doc=None if args.no_doc else args.doc.resolve(),
        jobs=args.jobs,
        report=args.report,
        synthetic=not args.skip_synthetic,
        timeout=args.timeout,
        overrides=args.overrides,
        command=shlex.join(["python", "scripts/benchmarks/quality.py", *argv]),
    )


def merge_records(paths: list[Path]) -> dict:
    """One record from runs of disjoint sets (e.g. the large set run on its own): the sets
    and the synthetic cohort of each, the means and targets recomputed over all of them."""
    records = [json.loads(Path(p).read_text()) for p in paths]
    merged = records[0]
    for other in records[1:]:
        merged["sets"] = {**merged["sets"], **other["sets"]}
        merged["synthetic"] = merged.get("synthetic") or other.get("synthetic")
    merged["merged_from"] = [
        {"file": str(p), "command": r.get("command"), "machine": r.get("machine")}
        for p, r in zip(paths, records, strict=True)
    ]
    merged["sets_run"] = list(merged["sets"])
    merged["subset"] = sorted(merged["sets"]) != sorted(merged.get("sets_in_root", merged["sets"]))
    merged["means"] = mean_accuracies(merged["sets"])
    merged["targets"] = check_targets(merged["sets"], merged["synthetic"])
    return merged


def run_label(record: dict) -> str:
    """A run's name in a spread: its seed override, else "default seed" (none given)."""
    seeds = [o.split("=", 1)[1] for o in record.get("overrides", []) if o.startswith("seed=")]
    return f"seed {seeds[-1]}" if seeds else "default seed"


def spread_table(records: list[dict]) -> list[str]:
    """Markdown: per set, the accuracy (AUROC) of every run, the mean and range, and in
    how many of the runs that scored the set targets (a), (b), (d) and (f) pass."""
    labels = [run_label(r) for r in records]
    names = list(dict.fromkeys(n for r in records for n in r["sets"]))
    head = ["set", *labels, "mean acc (range)", "(a) / (b) / (d) / (f) pass"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        runs = [r["sets"].get(name) for r in records]
        cells = [
            "–"
            if run is None
            else f"{run.get('stage')} failed"
            if run.get("accuracy") is None
            else f"{_fmt(run['accuracy'])} ({_fmt(run.get('auroc'))})"
            for run in runs
        ]
        scored = [run for run in runs if run is not None]
        accs = [run["accuracy"] for run in scored if run.get("accuracy") is not None]
        summary = f"{_mean(accs):.3f} ({min(accs):.3f}-{max(accs):.3f})" if accs else "no result"
        checks = [check_set(run) for run in scored]
        passes = []
        for key in ("a", "b", "d", "f"):
            judged = [c[key]["pass"] for c in checks if c[key]["pass"] is not None]
            passes.append(f"{sum(judged)} of {len(judged)}" if judged else "n/a")
        lines.append("| " + " | ".join([name, *cells, summary, " / ".join(passes)]) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--spread"]:
        records = [json.loads(Path(a).read_text()) for a in argv[1:]]
        if not records:
            sys.exit("error: --spread needs quality.json files of runs of the same sets")
        print("\n".join(spread_table(records)))
        return
    if argv[:1] == ["--merge"]:
        paths = [Path(a) for a in argv[1:] if not a.startswith("--") and a.endswith(".json")]
        doc = Path(argv[argv.index("--doc") + 1]) if "--doc" in argv else Options().doc
        record = merge_records(paths)
        doc.write_text(render_doc(record))
        print(f"wrote {doc} from {len(paths)} runs")
        return
    opts = parse_args(argv)
    if not opts.root.is_dir():
        sys.exit(f"error: quality root {opts.root} not found (--root)")
    run_benchmark(opts)


if __name__ == "__main__":
    main()
