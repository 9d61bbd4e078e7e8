"""Runs a suite: one resumable training run per (row, seed), its evaluation, and the report.

Layout of ``workdir``: ``<suite>/<row>/seed<k>/`` holds ``config.json``, ``train/`` (the training
run: checkpoints, TensorBoard, samples, ``final/``), ``state.json`` (training seconds and the
curve points so far) and, once done, ``result.json`` and ``grid.npy`` (the row's images on the
suite's fixed z). ``teacher/`` holds the teacher's reference line; ``real_<n>.npz`` and
``teacher_<n>.npz`` the cached FID statistics, ``suite_config.json`` the config they were all made with
(a later sitting with another one is refused). A run with a ``result.json`` is skipped; any
other run resumes from its last checkpoint, so the same command continues an interrupted suite.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tf_distill.errors import UserError, first_few
from tf_distill.limits import MAX_BATCH, MAX_COUNT, MAX_SEEDS_PER_ROW
from tf_distill.outputs import write_file_atomic
from tf_distill.progress import format_duration
from tf_distill.reproduce.suites import SUITES, resolve_config, row_overrides

GRID_COUNT = 8
SUITE_CONFIG = "suite_config.json"  # in the suite's workdir: the config its runs were made with
# Keys a suite may change between sittings: how many runs it plans, and how often the runs log.
FREE_KEYS = ("seeds", "seeds_per_row", "base.log")


@dataclass(frozen=True)
class RunSpec:
    suite: str
    row: str
    seed: int
    directory: Path

    @property
    def name(self):
        return f"{self.suite}/{self.row}/seed{self.seed}"


def plan(config, workdir, suites, rows=None, seeds=None):
    """The runs of ``suites`` (rows filtered by ``rows``; ``seeds`` overrides the config's seed counts).

    Seed-major: every row of every suite gets its first seed before any row gets a second, so a
    suite stopped early (or run over several sittings) still covers each row.
    """
    for suite in suites:
        if suite not in SUITES:
            raise ValueError(f"unknown suite {suite!r}; choose from {sorted(SUITES)} or 'all'.")
    unknown = set(rows or ()) - {r for suite in suites for r in SUITES[suite]}
    if unknown:
        raise ValueError(f"rows {sorted(unknown)} are not in suite(s) {', '.join(suites)}.")
    counts = {(suite, row): seeds or config.seeds_per_row.get(row, config.seeds)
              for suite in suites for row in SUITES[suite] if not rows or row in rows}
    return [RunSpec(suite, row, seed, Path(workdir) / suite / row / f"seed{seed}")
            for seed in range(max(counts.values(), default=0))
            for (suite, row), count in counts.items() if seed < count]


_EVAL_MINIMUMS = {"real_images": 2, "teacher_samples": 2, "fid_samples": 2, "curve_fid_samples": 2,  # a covariance
                  "lpips_samples": 1, "curve_lpips_samples": 1, "diversity_pairs": 1, "batch": 1, "curve_points": 0}


def check_suite_config(config):
    """Raises a UserError naming every bad value of a reproduction ``config``'s own keys (seeds, rows, evaluation
    sizes), before a plan is made from them (10^12 seeds would be 10^12 runs)."""
    from tf_distill.train.config_check import Problems, is_int  # pylint: disable=import-outside-toplevel

    problems = Problems(config)
    rows = {row for suite in SUITES.values() for row in suite}
    problems.require("seeds", lambda v: is_int(v) and 1 <= v <= MAX_SEEDS_PER_ROW,
                     f"an integer in [1, {MAX_SEEDS_PER_ROW}]")
    for row in (r for r in config.seeds_per_row if r in rows):  # unknown rows are named below
        problems.require(f"seeds_per_row.{row}", lambda v: is_int(v) and 0 <= v <= MAX_SEEDS_PER_ROW,
                         f"an integer in [0, {MAX_SEEDS_PER_ROW}]")
    problems.require("mimic_steps", lambda v: is_int(v) and 0 <= v <= MAX_COUNT, "an integer >= 0")
    for key, low in _EVAL_MINIMUMS.items():
        high = MAX_BATCH if key == "batch" else MAX_COUNT
        problems.require(f"eval.{key}", lambda v, low=low, high=high: is_int(v) and low <= v <= high,
                         f"an integer in [{low}, {high}]")
    for key, named in (("seeds_per_row", list(config.seeds_per_row)),
                       ("eval.curve_rows", list(config.eval.curve_rows))):
        unknown = [r for r in named if r not in rows]
        if unknown:  # a misspelt row would be ignored without a word
            problems.append(f"{problems.name(key)} names rows no suite has: {first_few(unknown, 4)} (the rows: "
                            f"{first_few(sorted(rows), 20)})")
    problems.raise_if_any()


def check_run_configs(config, specs):
    """Raises a UserError naming every bad value of the planned runs' training configs (``config.base`` with each
    row's overrides) before the first run trains: each would otherwise fail only when its run starts, hours in."""
    from tf_distill.train.config_check import ConfigError, config_problems  # pylint: disable=import-outside-toplevel

    problems = []
    first_runs = {}  # one run per row: a row's runs differ only in config.seed, which check_suite_config bounds
    for spec in specs:
        first_runs.setdefault((spec.suite, spec.row), spec)
    for spec in first_runs.values():
        overrides = row_overrides(spec.suite, spec.row, config.mimic_steps)
        try:
            found = config_problems(resolve_config(config.base, overrides, spec.seed), prefix="config.base")
        except ConfigError as err:  # keys missing: one message
            found = [str(err)]
        problems.extend(p for p in found if p not in problems)
    if problems:
        raise UserError("; ".join(problems))


def _results_config(config):
    """``config`` as JSON data without the FREE_KEYS: what a suite's results depend on."""
    data = json.loads(config.to_json_best_effort())
    for key in FREE_KEYS:
        *sections, name = key.split(".")
        node = data
        for section in sections:
            node = node.get(section, {})
        node.pop(name, None)
    return data


def _changed_keys(before, now, prefix="config"):
    """The dotted keys whose values differ between two JSON configs, with both values."""
    changed = []
    for key in sorted(set(before) | set(now)):
        a, b = before.get(key, "(none)"), now.get(key, "(none)")
        if isinstance(a, dict) and isinstance(b, dict):
            changed.extend(_changed_keys(a, b, f"{prefix}.{key}"))
        elif a != b:
            changed.append(f"{prefix}.{key} {a!r} -> {b!r}")
    return changed


def check_suite_config_unchanged(config, workdir):
    """Refuses to continue or report a suite ``workdir`` made with another config (its finished runs would sit
    beside new ones in one report, and its cached FID statistics would be of the old teacher or data); the
    FREE_KEYS may change. A workdir without a record (new) passes."""
    path = Path(workdir) / SUITE_CONFIG
    if not path.is_file():
        return
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path} cannot be read ({err}) (restore it, or choose a new --workdir)") from None
    changed = _changed_keys(before, _results_config(config))
    if changed:
        raise UserError(f"--workdir={workdir} holds a suite made with another config: {first_few(changed, 3)} (rerun "
                        f"with the config it was made with, see {SUITE_CONFIG}, or choose a new --workdir)")


def record_suite_config(config, workdir):
    """Writes the config a suite's results depend on into its ``workdir`` (once; check_suite_config_unchanged reads
    it)."""
    path = Path(workdir) / SUITE_CONFIG
    if not path.exists():
        write_json(path, _results_config(config))


def write_json(path, data):
    """Writes JSON atomically (a temporary sibling renamed into place)."""
    write_file_atomic(path, json.dumps(data, indent=2) + "\n")


def read_json(path, default=None):
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else default


class SuiteRunner:
    """Trains and evaluates every run of a plan that has no result yet; prints progress over the suite."""

    def __init__(self, config, workdir, specs, log=print):
        self.config, self.workdir, self.specs, self.log = config, Path(workdir), specs, log

    def _setup(self):
        from tf_distill.io import checkpoints  # pylint: disable=import-outside-toplevel
        from tf_distill.metrics.inception import FIDInceptionV3  # pylint: disable=import-outside-toplevel
        from tf_distill.metrics.lpips import LPIPS  # pylint: disable=import-outside-toplevel
        from tf_distill.reproduce.evaluate import SuiteEvaluator  # pylint: disable=import-outside-toplevel

        self.lpips, inception = LPIPS(), FIDInceptionV3()
        self.teacher = checkpoints.load_generator(self.config.base.teacher)
        self.evaluator = SuiteEvaluator(self.workdir, self.config.base.data.source, self.teacher, self.config.eval,
                                        self.lpips, inception)
        self.evaluator.real_statistics()
        self.evaluator.teacher_statistics()
        teacher_dir = self.workdir / "teacher"
        if not (teacher_dir / "result.json").exists():
            self.log("[reproduce] evaluating the teacher (the reference line)")
            teacher_dir.mkdir(parents=True, exist_ok=True)
            start = time.time()
            result = self.evaluator.evaluate(self.teacher, "teacher")
            np.save(teacher_dir / "grid.npy", self._grid(self.teacher))
            write_json(teacher_dir / "result.json", dict(result, suite="teacher", row="teacher", seed=0, steps=0,
                                                         wall_s=0.0, eval_s=round(time.time() - start, 1)))

    @staticmethod
    def _grid(generator):
        from tf_distill.reproduce.evaluate import grid_samples  # pylint: disable=import-outside-toplevel

        return grid_samples(generator, GRID_COUNT)

    def run(self):
        """Runs what is not finished; returns True when every run of the plan has a result."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        record_suite_config(self.config, self.workdir)
        todo = [s for s in self.specs if not (s.directory / "result.json").exists()]
        total = len(self.specs)
        self.log(f"[reproduce] {total} runs planned, {total - len(todo)} already finished, {len(todo)} to run")
        if not todo:
            return True
        self._setup()
        start, durations = time.time(), []
        for i, spec in enumerate(todo):
            done = total - len(todo) + i
            eta = "?" if not durations else format_duration(np.mean(durations) * (len(todo) - i))
            elapsed = format_duration(time.time() - start)
            self.log(f"[reproduce] run {done + 1}/{total}: {spec.name} (suite elapsed {elapsed}, ETA {eta})")
            t0 = time.time()
            if not self.run_one(spec):
                self.log(f"[reproduce] stopped during {spec.name}; run the same command again to resume")
                return False
            durations.append(time.time() - t0)
            result = read_json(spec.directory / "result.json")
            self.log(f"[reproduce] {spec.name}: FID {result['fid']:.2f}, FID vs teacher {result['fid_vs_teacher']:.2f}, "
                     f"LPIPS to teacher {result['lpips_to_teacher']:.3f}, diversity {result['diversity']:.3f} "
                     f"(train {result['wall_s']:.0f} s, eval {result['eval_s']:.0f} s)")
        return True

    def _curve_steps(self, spec, total):
        curve = self.config.eval
        if spec.row not in curve.curve_rows or spec.seed != 0 or curve.curve_points < 1:
            return [total]
        return sorted({max(1, round(total * (k + 1) / curve.curve_points)) for k in range(curve.curve_points)})

    def run_one(self, spec):
        """Trains (resuming) and evaluates one run; False if a signal stopped it."""
        from tf_distill.train.loop import Run  # pylint: disable=import-outside-toplevel

        spec.directory.mkdir(parents=True, exist_ok=True)
        overrides = row_overrides(spec.suite, spec.row, self.config.mimic_steps)
        config = resolve_config(self.config.base, overrides, spec.seed)
        (spec.directory / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
        state = read_json(spec.directory / "state.json", {"train_seconds": 0.0, "curve": []})
        run = Run(config, spec.directory / "train", lpips=self.lpips)
        run.restore()
        total = config.train.steps
        targets = self._curve_steps(spec, total)
        for target in targets:
            step = int(run.step.step.numpy())
            if step < target:
                t0 = time.time()
                step = run.run(max_steps=target - step)
                state["train_seconds"] += time.time() - t0
                write_json(spec.directory / "state.json", state)
                if step < target:
                    return False
            if len(targets) > 1:
                if not any(p["step"] == target for p in state["curve"]):
                    point = self.evaluator.curve_point(run.g_ema, f"{spec.name} step {target}")
                    state["curve"].append(dict(point, step=target))
                    write_json(spec.directory / "state.json", state)
        start = time.time()
        result = self.evaluator.evaluate(run.g_ema, spec.name)
        np.save(spec.directory / "grid.npy", self._grid(run.g_ema))
        write_json(spec.directory / "result.json", dict(
            result, suite=spec.suite, row=spec.row, seed=spec.seed, steps=total,
            wall_s=round(state["train_seconds"], 1), eval_s=round(time.time() - start, 1), curve=state["curve"]))
        return True

