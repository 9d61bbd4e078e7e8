"""The suite's report: ``runs.csv``, ``README.md`` (tables beside the paper's numbers, verdicts) and PNGs.

Verdicts compare two rows' mean FID over seeds: the difference counts only when it exceeds twice its
standard error (``sqrt(s_a^2 / n_a + s_b^2 / n_b)``, sample standard deviations over seeds); then
its sign decides "reproduced" or "not reproduced", otherwise it is "not distinguishable at this spread".
"""

import csv
import math
import os
import platform
from pathlib import Path

import numpy as np

from tf_distill.metrics.generator_eval import RESEMBLANCE_FID_RATIO as FID_RATIO_TARGET
from tf_distill.metrics.generator_eval import RESEMBLANCE_LPIPS as LPIPS_TARGET
from tf_distill.reproduce.runner import read_json
from tf_distill.reproduce.suites import PAPER_TABLE1_FID, SUITES

COLUMNS = ["suite", "row", "seed", "steps", "fid", "fid_vs_teacher", "lpips_to_teacher", "diversity", "wall_s",
           "eval_s"]
METRICS = ["fid", "fid_vs_teacher", "lpips_to_teacher", "diversity"]
KEEP_MARKER = "<!-- Everything below this line is written by hand and kept when the report is rewritten. -->"

#: (claim, row a, row b): the paper says FID(a) < FID(b).
TABLE1_CLAIMS = [
    ("LD (KL) helps RGB", "rgb_ld_kl", "rgb"),
    ("LD (KL) helps RGB + LPIPS", "rgb_lpips_ld_kl", "rgb_lpips"),
    ("A random offset hurts (RGB + Random Offset (KL) worse than RGB)", "rgb", "rgb_random_offset_kl"),
    ("A single view helps marginally (RGB + Single View (KL) better than RGB)", "rgb_single_view_kl", "rgb"),
    ("A single view is worse than two views (RGB + LD (KL))", "rgb_ld_kl", "rgb_single_view_kl"),
    ("KL beats L2 for the LD loss (RGB)", "rgb_ld_kl", "rgb_ld_l2"),
    ("LPIPS helps (RGB + LPIPS better than RGB)", "rgb_lpips", "rgb"),
    ("KL beats L2 for the LD loss (RGB + LPIPS)", "rgb_lpips_ld_kl",
     "rgb_lpips_ld_l2"),
    ("Distillation beats training the student alone (not a paper row)", "rgb_lpips_ld_kl", "scratch"),
]
COLLAPSE_RATIO, LEARNED_RATIO = 0.25, 0.75  # diversity relative to the teacher's


def load_results(workdir, specs):
    results = [r for r in (read_json(s.directory / "result.json") for s in specs) if r is not None]
    return results, read_json(Path(workdir) / "teacher" / "result.json")


def write_csv(results, path):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in results:
            writer.writerow({k: (f"{r[k]:.4f}" if isinstance(r[k], float) else r[k]) for k in COLUMNS})


def by_row(results):
    rows = {}
    for r in results:
        rows.setdefault((r["suite"], r["row"]), []).append(r)
    return rows


def mean_std(values):
    values = np.asarray(values, np.float64)
    return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else float("nan")), len(values)


def _fmt(values, digits):
    mean, std, n = mean_std(values)
    return f"{mean:.{digits}f}" if n < 2 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def compare(better, worse):
    """Verdict on "mean(better) < mean(worse)": (verdict, difference, standard error)."""
    (ma, sa, na), (mb, sb, nb) = mean_std(better), mean_std(worse)
    diff = ma - mb
    if na < 2 or nb < 2:
        return "too few seeds to judge", diff, float("nan")
    se = math.sqrt(sa ** 2 / na + sb ** 2 / nb)
    if abs(diff) <= 2 * se:
        return "not distinguishable at this spread", diff, se
    return ("reproduced" if diff < 0 else "not reproduced"), diff, se


def table1_claims(rows):
    lines = []
    for claim, a, b in TABLE1_CLAIMS:
        ra, rb = rows.get(("table1", a)), rows.get(("table1", b))
        if not ra or not rb:
            continue
        verdict, diff, se = compare([r["fid"] for r in ra], [r["fid"] for r in rb])
        paper = (f"{PAPER_TABLE1_FID[a]:.2f} vs {PAPER_TABLE1_FID[b]:.2f}" if a in PAPER_TABLE1_FID
                 and b in PAPER_TABLE1_FID else "")
        lines.append(f"| {claim} | `{a}` vs `{b}` | {paper} | {diff:+.2f} ± {se:.2f} | **{verdict}** |")
    return lines


def fig1_claims(rows, teacher):
    if teacher is None:
        return []
    lines, t_div = [], teacher["diversity"]
    cases = [("Without a suitable mapping the no-GAN student collapses (same output for every z)",
              "nogan_random_mapping", lambda ratio: ratio < COLLAPSE_RATIO),
             ("With the teacher's mapping copied it learns (diverse samples)", "nogan_teacher_mapping",
              lambda ratio: ratio >= LEARNED_RATIO),
             ("With a mapping trained to mimic the teacher's (stage 1) it learns", "nogan_mimic_mapping",
              lambda ratio: ratio >= LEARNED_RATIO)]
    for claim, row, holds in cases:
        runs = rows.get(("fig1", row))
        if not runs:
            continue
        ratios = [r["diversity"] / t_div for r in runs]
        verdict = "reproduced" if all(holds(x) for x in ratios) else (
            "not reproduced" if not any(holds(x) for x in ratios) else "mixed over seeds")
        lines.append(f"| {claim} | `{row}` | {', '.join(f'{x:.2f}' for x in ratios)} | **{verdict}** |")
    return lines


def metric_table(rows, suite, teacher, paper=None):
    head = "| row | " + ("paper FID | " if paper else "") + \
        "FID | FID vs teacher | LPIPS to teacher | diversity | seeds | train s / run |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    if teacher is not None:
        lines.append("| teacher | " + ("— | " if paper else "") + f"{teacher['fid']:.2f} | "
                     f"{teacher['fid_vs_teacher']:.2f} (second sample set) | 0 | {teacher['diversity']:.3f} | — | — |")
    for row in SUITES[suite]:
        runs = rows.get((suite, row))
        if not runs:
            continue
        cells = [f"`{row}`"]
        if paper:
            cells.append(f"{paper[row]:.2f}" if row in paper else "—")
        cells += [_fmt([r["fid"] for r in runs], 2), _fmt([r["fid_vs_teacher"] for r in runs], 2),
                  _fmt([r["lpips_to_teacher"] for r in runs], 3), _fmt([r["diversity"] for r in runs], 3),
                  str(len(runs)), f"{np.mean([r['wall_s'] for r in runs]):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def best_row_line(rows, teacher):
    """The Table 1 row closest to the teacher by mean FID, against the demo's resemblance targets."""
    candidates = {row: runs for (suite, row), runs in rows.items() if suite == "table1" and row != "scratch"}
    if not candidates or teacher is None:
        return ""
    row, runs = min(candidates.items(), key=lambda kv: np.mean([r["fid"] for r in kv[1]]))
    fid, lpips = np.mean([r["fid"] for r in runs]), np.mean([r["lpips_to_teacher"] for r in runs])
    holds = fid <= FID_RATIO_TARGET * teacher["fid"] and lpips <= LPIPS_TARGET
    return (f"Best row by mean FID: `{row}`, FID {fid:.2f} = {fid / teacher['fid']:.2f}x the teacher's, LPIPS to "
            f"teacher {lpips:.3f}: the demo's resemblance target (LPIPS <= {LPIPS_TARGET}, FID <= "
            f"{FID_RATIO_TARGET}x the teacher's) {'holds' if holds else 'does not hold'}.")


def curves_png(results, path, fid_samples):
    """FID and LPIPS-to-teacher over training steps of every run that recorded a curve."""
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    runs = [r for r in results if r.get("curve")]
    if not runs:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in runs:
        curve = sorted(r["curve"], key=lambda p: p["step"])
        steps = [p["step"] for p in curve]
        label = f"{r['row']} (seed {r['seed']})"
        axes[0].plot(steps, [p["fid"] for p in curve], marker="o", label=label)
        axes[1].plot(steps, [p["lpips_to_teacher"] for p in curve], marker="o", label=label)
    axes[0].set(xlabel="step", ylabel=f"FID ({fid_samples} samples)", title="FID against real images")
    axes[1].set(xlabel="step", ylabel="LPIPS", title="LPIPS student-to-teacher")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def grid_png(workdir, specs, path):
    """One row per run label (teacher first, then each row's first seed), the same z and noise in every column."""
    from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel

    from tf_distill.images import make_grid, to_uint8  # pylint: disable=import-outside-toplevel

    entries = [("teacher", Path(workdir) / "teacher" / "grid.npy")]
    entries += [(s.row, s.directory / "grid.npy") for s in specs if s.seed == 0]
    entries = [(label, np.load(p)) for label, p in entries if p.exists()]
    if not entries:
        return None
    ncol = entries[0][1].shape[0]
    grid = make_grid(to_uint8(np.concatenate([images for _, images in entries])), ncol=ncol)
    if grid.shape[-1] == 1:
        grid = np.repeat(grid, 3, axis=-1)
    cell = entries[0][1].shape[1] + 2
    label_width = 150
    canvas = Image.new("RGB", (label_width + grid.shape[1], grid.shape[0]), "white")
    canvas.paste(Image.fromarray(grid), (label_width, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (label, _) in enumerate(entries):
        draw.text((4, 2 + i * cell + cell // 2 - 6), label, fill="black")
    canvas = canvas.resize((canvas.width * 2, canvas.height * 2), Image.NEAREST)
    canvas.save(path)
    return path


def _machine():
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores ({model or platform.processor()}), {platform.system()}"


def write_report(config, workdir, specs, report_dir, command=""):
    """Writes runs.csv, curves.png, grid.png and README.md (keeping hand-written text after the marker)."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    results, teacher = load_results(workdir, specs)
    write_csv(results, report_dir / "runs.csv")
    curves = curves_png(results, report_dir / "curves.png", config.eval.curve_fid_samples)
    grid = grid_png(workdir, specs, report_dir / "grid.png")
    rows = by_row(results)
    base, ev = config.base, config.eval
    train_s = sum(r["wall_s"] for r in results)
    eval_s = sum(r["eval_s"] for r in results) + (teacher["eval_s"] if teacher else 0.0)
    lines = [
        "# Reproducing StyleKD's findings at small scale",
        "",
        f"{len(results)} of {len(specs)} planned runs finished. Machine: {_machine()}. Wall time of the finished "
        f"runs: {train_s / 60:.1f} min of training + {eval_s / 60:.1f} min of evaluation = "
        f"{(train_s + eval_s) / 60:.1f} min (the one-off statistics of {ev.real_images} real images and "
        f"{ev.teacher_samples} teacher samples not included).",
        "",
        "```bash",
        command or "tf-distill-reproduce",
        "```",
        "",
        "## Setup",
        f"- Teacher `{base.teacher}`, data `{base.data.source}`, {base.generator.size} px; student channels "
        f"`{list(base.generator.channels)}`; every row starts from the same config and changes only its own terms.",
        f"- {base.train.steps} steps at batch {base.train.batch_size}, lr {base.train.lr}, EMA {base.train.ema_decay}, "
        f"KD-only warm-up {base.kd.warmup_steps} steps (rows with a teacher), LD relation on blocks "
        f"{list(base.kd.mimic_layers)}; stage 1 of `nogan_mimic_mapping`: {config.mimic_steps} steps.",
        f"- Metrics of each run's EMA generator: FID of {ev.fid_samples} samples against the first "
        f"{ev.real_images} real images (`fid`) and against {ev.teacher_samples} teacher samples "
        f"(`fid_vs_teacher`); LPIPS student-to-teacher on {ev.lpips_samples} shared z and noise maps; diversity = "
        f"mean LPIPS between the samples of {ev.diversity_pairs} pairs of distinct z (each pair with the same noise "
        "maps, so a generator that ignores z scores 0). Values are mean ± sample std over seeds.",
        "",
        "## Table 1 (supplementary): the loss ablation",
        *metric_table(rows, "table1", teacher, PAPER_TABLE1_FID),
        "",
        "The paper's FID is on FFHQ 256 with 50k samples; ours are on this suite's scale, so compare the order "
        "of the rows, not the values.",
        "",
        best_row_line(rows, teacher),
        "",
        "| claim | rows | paper FID | our FID difference ± s.e. | verdict |",
        "|---|---|---|---|---|",
        *table1_claims(rows),
        "",
        "## Fig. 1: distillation without the GAN loss",
        *metric_table(rows, "fig1", teacher),
        "",
        f"Collapse: diversity below {COLLAPSE_RATIO:g} x the teacher's; learned: at least {LEARNED_RATIO:g} x.",
        "",
        "| claim | row | diversity / teacher's, per seed | verdict |",
        "|---|---|---|---|",
        *fig1_claims(rows, teacher),
        "",
    ]
    if curves:
        lines += ["## Curves", f"![curves]({curves.name})", ""]
    if grid:
        lines += ["## Samples (the same z and noise in every column; each row's first seed)", f"![grid]({grid.name})",
                  ""]
    readme = report_dir / "README.md"
    kept = ""
    if readme.exists():  # a README of someone else's (no marker: --report_dir with --overwrite) is kept whole
        text = readme.read_text()
        kept = text.split(KEEP_MARKER, 1)[1] if KEEP_MARKER in text else "\n" + text
    readme.write_text("\n".join(lines) + "\n" + KEEP_MARKER + kept)
    return readme
