"""Phase boundaries and initial NIW decay of any network, predicted at initialisation from the
local Hessian (the method's second-order theory: the NIW update carries the factor 1 - eta sigma^2 H_z).

Measured on a sample of training data, at each NIN layer l (nin_cli/nets/hessian.py):
  lambda_l  top eigenvalue of <H_z>            (power iteration on Hessian-vector products)
  c_l       curvature along the NIW, W^T <H_z> W / |W|^2
  G_l       sum_j <g_{z,j}^2>, the per-sample gradient's second moment
and of the whole net, S(sigma): the top Hessian eigenvalue of the noisy training loss w.r.t. the
data weights at noise scale sigma. Then, on sigma^2 (eta: learning rate, B: batch size, T: steps):
  NIW instability     eta sigma^2 lambda_l = 2                  -> sigma^2 = 2 / (eta lambda_l)
  sharpness edge      S(sigma) = 2 / eta (edge of stability)    -> sigma^2 by bisection
  decay/catapult      the first of the two to set in, catapult/divergent the second
                      (for the linear toy model these are 2/Bt0 and 2/B0: nin theory's min and max)
  decoupled/decay     the NIW's mean square under decay and random walk together,
                      |W|^2 <- a |W|^2 + b per step, a = (1 - eta sigma^2 c_l)^2, b = eta^2 sigma^2 G_l / B,
                      ends the run (T steps) below decay_niw_ratio of its start (the classifier's
                      rule): decay must beat the floor b / (1 - a) ~ eta G_l / (2 B c_l) the random
                      walk holds the NIW at, and be fast enough to show in T steps
                      (per-step balance of the two terms, the toy model's rule, for comparison:
                      sigma^2 = G_l / (B c_l^2 |W|^2), column sigma2_random_walk)
  tau_niw(sigma)      -1 / ln|1 - eta sigma^2 c_l| steps, while that factor is below 1.
An instability of any NIN layer sets the net's; decoupled/decay is the first NIN layer's, whose NIW
`nin summarize` classifies the phase by.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig

from nin_cli.analysis.summarize import write_csv
from nin_cli.config.overrides import sweep_jobs
from nin_cli.config.preflight import check_command
from nin_cli.config.resolve import load, paper_unit, resolve, without_hydra
from nin_cli.config.schema import conf_dir, load_settings
from nin_cli.config.sources import using
from nin_cli.errors import ConfigError
from nin_cli.identity import exempt
from nin_cli.nets.hessian import ProbedLoss, noisy_sharpness
from nin_cli.nets.noise import unit_noise
from nin_cli.seeding import generator
from nin_cli.train.rows import train_subset
from nin_cli.train.setup import Setup, build


def niw_mean_square(w_sq: float, curvature: float, grad_moment: float, eta: float, sigma: float, batch: int, steps: float):
    """E|W_NI|^2 after `steps` SGD steps of decay and random walk from w_sq, and of decay alone."""
    a = (1 - eta * sigma * sigma * curvature) ** 2
    b = eta * eta * sigma * sigma * grad_moment / batch
    a_s = a**steps
    walk = b * steps if a == 1 else b * (1 - a_s) / (1 - a)
    return a_s * w_sq + walk, a_s * w_sq


def niw_tau_steps(eta: float, sigma: float, curvature: float) -> float:
    """e-folding time of the NIW norm, in steps, from its per-step factor |1 - eta sigma^2 c|
    (inf without noise, NaN where the factor is not below 1: the NIW grows)."""
    if sigma == 0:
        return math.inf
    factor = abs(1 - eta * sigma * sigma * curvature)
    if factor >= 1:
        return math.nan
    return 0.0 if factor == 0 else -1 / math.log(factor)


def first_crossing(test, lo: float, hi: float, points: int = 80, iterations: int = 30) -> float:
    """The smallest x in [lo, hi] (log scale) where test(x) holds, bisected; inf if nowhere."""
    grid = [lo * (hi / lo) ** (k / (points - 1)) for k in range(points)]
    hit = next((k for k, x in enumerate(grid) if test(x)), None)
    if hit is None:
        return math.inf
    if hit == 0:
        return lo
    a, b = grid[hit - 1], grid[hit]
    for _ in range(iterations):
        mid = math.sqrt(a * b)
        a, b = (a, mid) if test(mid) else (mid, b)
    return b


def phase_at(sigma2: float, boundaries: dict[str, float]) -> str:
    """The phase that boundaries on sigma^2 put a noise level in."""
    if sigma2 >= boundaries["catapult/divergent"]:
        return "divergent"
    if sigma2 >= boundaries["decay/catapult"]:
        return "catapult"
    return "decay" if sigma2 >= boundaries["decoupled/decay"] else "decoupled"


@dataclass
class LayerCurvature:
    layer: str
    lambda_max: float  # top eigenvalue of <H_z>
    curvature: float  # along the NIW
    grad_moment: float  # sum_j <g_{z,j}^2>
    niw_norm: float


@dataclass
class Prediction:
    """What `nin predict` prints: per-layer curvature, the net's boundaries, and a table per sigma."""

    layers: list[LayerCurvature]
    boundaries: dict[str, float]  # on sigma^2
    per_layer: pd.DataFrame  # each layer's own boundaries
    eta: float
    steps_per_epoch: int
    sigma2_unit: float  # sigma^2 of one paper unit (NaN where undefined)
    notes: list[str]  # where a prediction does not apply, and why

    def phase(self, sigma: float) -> str:
        return phase_at(sigma * sigma, self.boundaries)

    def tau_niw_epochs(self, sigma: float, layer: LayerCurvature) -> float:
        """Initial e-folding time of the NIW norm, in epochs (NaN where it does not decay)."""
        return niw_tau_steps(self.eta, sigma, layer.curvature) / self.steps_per_epoch

    def table(self, sigmas: list[float]) -> pd.DataFrame:
        rows = []
        for sigma in sigmas:
            row = {"noise.sigma": sigma, "sigma2_paper": sigma * sigma / self.sigma2_unit, "predicted_phase": self.phase(sigma)}
            row.update({f"tau_niw_{lc.layer}": self.tau_niw_epochs(sigma, lc) for lc in self.layers})
            rows.append(row)
        return pd.DataFrame(rows)

    def boundary_table(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {"boundary": name, "sigma2": s2, "sigma": math.sqrt(s2), "sigma2_paper": s2 / self.sigma2_unit}
                for name, s2 in self.boundaries.items()
            ]
        )


def sharpness_edge(measure, target: float, start: float, max_sigma2: float = 1e12, iterations: int = 14) -> float:
    """The smallest sigma^2 at which measure(sigma) reaches `target`, for a measure below it at
    sigma = 0: bracketing up by factors of 10 from `start`, then bisecting in log sigma^2 (the
    sharpness grows with sigma^2)."""
    lo, hi = 0.0, start
    while measure(math.sqrt(hi)) < target:
        lo, hi = hi, hi * 10
        if hi > max_sigma2:
            return math.inf
    for _ in range(iterations):
        mid = math.sqrt(hi * lo) if lo > 0 else hi / 10
        if measure(math.sqrt(mid)) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def predict(setup: Setup, acfg: DictConfig, samples: int | None = None, sharpness_iterations: int = 30) -> Prediction:
    """Curvature of the model at its initialisation on `samples` training points (default
    hessian.samples), and the boundaries and time-scales it implies."""
    cfg, model = setup.cfg, setup.model
    if not setup.nin_layers:
        raise ConfigError("nin predict needs a model with NINs (nin=input, all or layers)")
    data = train_subset(setup.data.train, samples or int(cfg.hessian.samples))
    x, y = data.x, data.y
    model.eval()  # no dropout while measuring; the NIN noise is passed explicitly below
    shapes = {n: setup.shapes[n] for n in setup.nin_layers}
    gen = generator(int(cfg.seed), "predict/power", setup.device)
    probed = ProbedLoss(model, x, y, setup.loss_fn, shapes)
    lam, curv = probed.top_eigenvalues(gen), probed.niw_curvatures()
    eta, batch = float(cfg.optimizer.lr), int(cfg.batch_size)
    steps_per_epoch = math.ceil(len(setup.data.train) / batch)
    steps = steps_per_epoch * int(cfg.epochs)
    layers, per_layer = [], []
    for n in setup.nin_layers:
        w = float(model.nins[n].weight.detach().norm())
        lc = LayerCurvature(n, lam[n], curv[n].curvature.mean, curv[n].grad_moment.mean, w)
        layers.append(lc)
        c = max(lc.curvature, 1e-30)
        random_walk = lc.grad_moment / (batch * c * c * w * w)

        def decays(s2, lc=lc, c=c, ratio=float(acfg.phases.decay_niw_ratio)):
            full, _ = niw_mean_square(lc.niw_norm**2, c, lc.grad_moment, eta, math.sqrt(s2), batch, steps)
            return math.sqrt(full) < ratio * lc.niw_norm

        decay = first_crossing(decays, 1e-12 / (eta * c), 2 / (eta * c))
        per_layer.append(
            {
                "layer": n,
                "lambda_max": lc.lambda_max,
                "niw_curvature": lc.curvature,
                "grad_moment": lc.grad_moment,
                "niw_norm": w,
                "sigma2_random_walk": random_walk,
                "sigma2_decay_visible": decay,
                "sigma2_niw_unstable": 2 / (eta * lc.lambda_max) if lc.lambda_max > 0 else math.inf,
            }
        )
    table = pd.DataFrame(per_layer)
    xi_gen = generator(int(cfg.seed), "predict/noise", setup.device)
    xi = {n: unit_noise(str(cfg.noise.distribution), len(x), xi_gen, setup.device) for n in setup.nin_layers}

    def sharpness(sigma: float) -> float:
        g = generator(int(cfg.seed), "predict/sharpness", setup.device)  # the same start vector every time
        return noisy_sharpness(model, x, y, setup.loss_fn, xi, sigma, g, sharpness_iterations)

    niw_unstable = float(table["sigma2_niw_unstable"].min())
    notes = []
    noise_free = sharpness(0.0)
    if noise_free >= 2 / eta:  # past the edge of stability without noise: no noise level marks it
        notes.append(
            f"the noise-free loss is already past the edge of stability (sharpness {noise_free:.4g} > 2/eta = {2 / eta:.4g}):"
            " no sharpness boundary; catapult/divergent is not predicted"
        )
        sharp = math.inf
    else:
        sharp = sharpness_edge(sharpness, 2 / eta, start=min(niw_unstable, 1.0) if math.isfinite(niw_unstable) else 1.0)
    decoupled = float(table["sigma2_decay_visible"].iloc[0])  # the first NIN's NIW, which the classifier reads
    boundaries = {
        "decoupled/decay": min(decoupled, niw_unstable, sharp),
        "decay/catapult": min(niw_unstable, sharp),
        "catapult/divergent": max(niw_unstable, sharp),
    }
    table["sigma2_sharpness_edge"] = sharp
    model.train()
    unit = paper_unit(cfg)
    return Prediction(layers, boundaries, table, eta, steps_per_epoch, unit, notes)


def sweep_boundaries(runs: list, acfg: DictConfig) -> dict[str, dict[str, float]]:
    """Predicted boundaries (sigma^2) for each run of a sweep: one prediction per group of runs
    that differ only in noise scale and seed, from its first run's config (model at that seed's init)."""
    skip = ("noise.sigma", "noise.sigma2_paper", "seed")
    groups: dict[tuple, list] = {}
    for run in runs:
        key = tuple(sorted((k, repr(v)) for k, v in run.config.items() if k not in skip and not exempt(k, "summary")))
        groups.setdefault(key, []).append(run)
    out = {}
    for members in groups.values():
        bounds = predict(build(load(members[0].path / "config.yaml").cfg), acfg).boundaries
        out.update({str(r.path): bounds for r in members})
    return out


def sweep_sigmas(hydra_cfg, cfg) -> list[float]:
    """The noise scales of the experiment's sweep grid (noise.sigma or noise.sigma2_paper), else a
    log grid of the papers' units from 1e-5 to 100 (of sigma from 0.01 to 1000 where no unit exists)."""
    unit = paper_unit(cfg)
    params = {str(k): v for k, v in (hydra_cfg.hydra.sweeper.get("params") or {}).items()}
    for key, to_sigma in (("noise.sigma", float), ("noise.sigma2_paper", lambda u: math.sqrt(float(u) * unit))):
        if key in params and (key == "noise.sigma" or math.isfinite(unit)):
            return sorted(to_sigma(job[0].split("=", 1)[1]) for job in sweep_jobs({key: params[key]}, []))
    if math.isfinite(unit):
        return [math.sqrt(10 ** (k / 2) * 1e-5 * unit) for k in range(15)]
    return [10 ** (k / 2) * 0.01 for k in range(11)]


def read_measured(path: str) -> pd.DataFrame:
    """A phases.csv of `nin summarize`: its sigmas, measured phase and tau_niw, renamed for predict.csv."""
    try:
        measured = pd.read_csv(path)
        measured["noise.sigma"] = measured["noise.sigma"].astype(float)
        return measured[["noise.sigma", "phase", "tau_niw_mean"]].rename(
            columns={"phase": "measured_phase", "tau_niw_mean": "tau_niw_measured"}
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{path}: not a phases.csv of nin summarize ({exc})") from None


def predict_setting(
    overrides: list[str], samples: int | None, sigmas: str | None, measured_path: str | None, out: Path, config_dirs: list[str] = ()
):
    """What `nin predict` shows: predict.csv, predict_boundaries.csv and predict_layers.csv in `out`; the
    tables to print, titled, and the prediction's notes."""
    conf = conf_dir()
    plan = check_command(overrides, multirun=False, config_dirs=config_dirs)
    overrides, sources = plan.overrides, plan.sources
    with hydra.initialize_config_dir(config_dir=str(conf), version_base="1.3"), using(sources):
        hydra_cfg = hydra.compose("train", overrides=overrides, return_hydra_config=True)
        cfg = resolve(without_hydra(hydra_cfg)).cfg  # the one composition, Hydra's node set aside
    measured = read_measured(measured_path) if measured_path else None
    if sigmas:
        values = [float(v) for v in sigmas.split(",")]
    else:
        values = list(measured["noise.sigma"]) if measured is not None else sweep_sigmas(hydra_cfg, cfg)
    result = predict(build(cfg), load_settings("analysis"), samples)
    out.mkdir(parents=True, exist_ok=True)
    table, bounds = result.table(values), result.boundary_table()
    if measured is not None:  # beside each predicted sigma, the measured row at that sigma (within rounding)
        table["noise.sigma"] = table["noise.sigma"].astype(float)  # a sweep of integer sigmas is read as integers
        tolerance = 1e-6 * max(1.0, float(table["noise.sigma"].abs().max()))
        table = pd.merge_asof(
            table.sort_values("noise.sigma"),
            measured.sort_values("noise.sigma"),
            on="noise.sigma",
            tolerance=tolerance,
            direction="nearest",
        )
        table["agree"] = table["predicted_phase"] == table["measured_phase"]
    write_csv(table, out / "predict.csv")
    write_csv(bounds, out / "predict_boundaries.csv")
    write_csv(result.per_layer, out / "predict_layers.csv")
    titles = [
        ("curvature at initialisation, per NIN layer (sigma^2 of each layer's own boundaries)", result.per_layer),
        ("predicted boundaries (sigma^2 = sigma2_paper x one paper unit)", bounds),
        ("predicted phase and initial tau_niw (epochs) per sigma", table),
    ]
    return titles, result.notes
