#!/usr/bin/env python3
"""Judge v3 simulation: success-rate e-processes of design.md, driven by a faithful model of the
engine (10% -> 30% -> 60%, 5 min bakes, 3 extensions then hold, minRequests 50), looking at every
scrape. Vectorised over seeds. Usage: python3 sim.py [section ...]  (see __main__)."""
import sys, math, time
import numpy as np

ALPHA = 0.01              # 1 - confidence
ALPHA_SR = ALPHA / 2      # success rate + latency enabled: Bonferroni k = 2
TOL = 0.01                # successRate.tolerance 1 pp
U_GRID = np.array([0.25, 0.5, 1, 2, 4, 8, 16, 32, 64], dtype=float)
A_MAX = 0.9
V_GRID = np.linspace(0.02, 0.98, 49)
PLAN = [(0.10, 300), (0.30, 300), (0.60, 300)]
MAX_EXT = 3
MIN_REQ = 50
HORIZON = 3600.0


def log_fail_factor(xc_t, xb, nc, nb, tol, u_grid=U_GRID):
    """ln E_t(u) for every u in the grid, shape (seeds, |U|). xc_t: floored canary errors."""
    r = nc / np.maximum(nb - xb, 1.0)
    cap = np.where(r > tol * A_MAX, A_MAX / np.maximum(r - tol * A_MAX, 1e-300), np.inf)
    u = np.minimum(u_grid[None, :], cap[:, None])
    a = r[:, None] * u / (1.0 + tol * u)
    return (xc_t[:, None] * np.log1p(u) + xb[:, None] * np.log1p(-a)
            - nc[:, None] * np.log1p(tol * u))


def pass_bet(pc, pb, rhat, tol2):
    """plug-in v maximising expected growth per canary request (vectorised)."""
    v = V_GRID[None, :]
    g = (pc[:, None] * np.log1p(-v) - np.log1p(-tol2 * v)
         + (pb[:, None] / rhat[:, None]) * np.log1p(rhat[:, None] * v / (1 - tol2 * v)))
    return V_GRID[np.argmax(g, axis=1)]


def log_pass_factor(xc, xb_t, nc, nb, v, tol2):
    nct = np.maximum(nc - xc, 0.0)
    r = nct / np.maximum(nb, 1.0)
    b = r * v / (1 - tol2 * v)
    return xc * np.log1p(-v) + xb_t * np.log1p(b) - nct * np.log1p(-tol2 * v)


def logaddexp_w(ls, lw):
    return np.logaddexp(ls, lw)


class Scen:
    """pb: baseline request-level error rate; dpp: canary - baseline (fraction) after onset;
    onset: seconds (None: from the start, random scrape phase); clusters: attempts per failing
    request (true); c_used: the judge's c; blip: list of (start, secs, +pp both sides)."""
    def __init__(self, name, pb, dpp, onset=0.0, clusters=1, c_used=None, blips=(),
                 healthy=None, pre_dpp=0.0):
        self.name, self.pb, self.dpp, self.onset = name, pb, dpp, onset
        self.clusters = clusters
        self.c_used = clusters if c_used is None else c_used
        self.blips = blips
        self.healthy = (dpp <= TOL + 1e-12) if healthy is None else healthy
        self.pre_dpp = pre_dpp

    def rates(self, t0, t1):
        """(baseline rate, canary rate) per sub-interval piece: returns list of (len, pb, pc)."""
        cuts = {t0, t1}
        if t0 < self.onset < t1:
            cuts.add(self.onset)
        for (s, d, _) in self.blips:
            for c in (s, s + d):
                if t0 < c < t1:
                    cuts.add(c)
        cuts = sorted(cuts)
        out = []
        for a, b in zip(cuts[:-1], cuts[1:]):
            mid = 0.5 * (a + b)
            pb = self.pb + sum(pp for (s, d, pp) in self.blips if s <= mid < s + d)
            pc = pb + (self.dpp if mid >= self.onset else self.pre_dpp)
            out.append((b - a, min(pb, 1.0), min(max(pc, 0.0), 1.0)))
        return out


def run(sc, rate, scrape, seeds=1000, rng=None, horizon=HORIZON, track_oracle=False):
    rng = rng or np.random.default_rng(12345)
    S = seeds
    tol, tol2 = TOL, 2 * TOL
    lnU = math.log(len(U_GRID))
    phase = rng.uniform(0, scrape, S)          # first look at `phase` after rollout start
    step = np.zeros(S, int); ext = np.zeros(S, int)
    step_start = np.zeros(S); seg = np.ones(S, int); k = np.zeros(S, int)
    logS = np.full((S, len(U_GRID)), -np.inf)
    logP = np.zeros(S)
    step_nc = np.zeros(S)
    done = np.zeros(S, bool); decision = np.zeros(S, int)  # 1 abort, 2 promote
    t_dec = np.full(S, np.nan)
    failed = np.zeros(S)                        # failing canary requests since onset
    cum = {kk: np.zeros(S) for kk in ("Xc", "Xb", "nc", "nb", "Kc", "Kb", "Nc", "Nb")}
    holding = np.zeros(S, bool)
    prev_T = np.zeros(S)
    nlooks = int(horizon / scrape) + 2
    for li in range(nlooks):
        T = phase + li * scrape
        act = ~done & (T <= horizon)
        if not act.any():
            break
        w = np.array([p[0] for p in PLAN])[step]
        # --- traffic in (prev_T, T]; pieces differ by onset/blips (same for all seeds except
        # for the first look, whose length is `phase`; handle pieces per seed-group by time).
        Nc = np.zeros(S); Nb = np.zeros(S); Kc = np.zeros(S); Kb = np.zeros(S)
        # pieces are computed on the common grid: use the per-seed window but piece boundaries
        # from scenario times; loop over unique windows would be slow -> approximate by
        # evaluating pieces on each seed's window via the scenario's breakpoints.
        t0 = prev_T; t1 = T
        bps = sorted({sc.onset} | {s for (s, d, _) in sc.blips} | {s + d for (s, d, _) in sc.blips})
        edges = [t0]
        for bp in bps:
            edges.append(np.clip(np.full(S, bp), t0, t1))
        edges.append(t1)
        edges = np.sort(np.stack(edges), axis=0)
        for a, b in zip(edges[:-1], edges[1:]):
            L = b - a
            if not (L > 0).any():
                continue
            mid = 0.5 * (a + b)
            pb = np.full(S, sc.pb)
            for (s0, d0, pp) in sc.blips:
                pb = pb + np.where((mid >= s0) & (mid < s0 + d0), pp, 0.0)
            pc = pb + np.where(mid >= sc.onset, sc.dpp, sc.pre_dpp)
            pb = np.clip(pb, 0, 1); pc = np.clip(pc, 0, 1)
            N = rng.poisson(rate * L)
            nc_ = rng.binomial(N, w)
            nb_ = N - nc_
            kc_ = rng.binomial(nc_, pc); kb_ = rng.binomial(nb_, pb)
            Nc += nc_; Nb += nb_; Kc += kc_; Kb += kb_
            failed += np.where(mid >= sc.onset, kc_, 0) * act
        cl = sc.clusters
        nc = Nc + (cl - 1) * Kc; nb = Nb + (cl - 1) * Kb   # attempts
        xc = cl * Kc; xb = cl * Kb
        c = sc.c_used
        xct = np.floor((cum["Xc"] + xc) / c) - np.floor(cum["Xc"] / c)
        xbt = np.floor((cum["Xb"] + xb) / c) - np.floor(cum["Xb"] / c)
        # --- pass bet (predictable: rollout counts before this look)
        pc_hat = (np.floor(cum["Xc"] / c) + 0.5) / (cum["nc"] + 1)
        pb_hat = (np.floor(cum["Xb"] / c) + 0.5) / (cum["nb"] + 1)
        v = pass_bet(pc_hat, pb_hat, w / (1 - w), tol2)
        # --- fail e-process with restarts
        k = k + 1
        lw = -np.log(seg * (seg + 1.0)) - np.log(k * (k + 1.0))
        lf = log_fail_factor(xct, xb, nc, nb, tol)
        logS = np.where(act[:, None], np.logaddexp(logS, lw[:, None]) + lf, logS)
        logM = np.logaddexp.reduce(logS, axis=1) - lnU
        lp = log_pass_factor(xc, xbt, nc, nb, v, tol2)
        logP = np.where(act, logP + lp, logP)
        step_nc += np.where(act, Nc, 0)
        for kk, val in (("Xc", xc), ("Xb", xb), ("nc", nc), ("nb", nb), ("Kc", Kc), ("Kb", Kb),
                        ("Nc", Nc), ("Nb", Nb)):
            cum[kk] += np.where(act, val, 0)
        prev_T = np.where(act, T, prev_T)
        # --- decisions
        ab = act & (logM >= math.log(1 / ALPHA_SR))
        decision[ab] = 1; t_dec[ab] = T[ab]; done |= ab
        act2 = act & ~ab
        bake = np.array([p[1] for p in PLAN])[step]
        eos = act2 & (T >= step_start + bake * (ext + 1))
        passed = eos & (logP >= math.log(1 / ALPHA)) & (step_nc >= MIN_REQ)
        last = passed & (step == len(PLAN) - 1)
        decision[last] = 2; t_dec[last] = T[last]; done |= last
        adv = passed & ~last
        step = np.where(adv, step + 1, step)
        step_start = np.where(adv, T, step_start)
        ext = np.where(adv, 0, ext); holding = np.where(adv, False, holding)
        logP = np.where(adv, 0.0, logP); step_nc = np.where(adv, 0, step_nc)
        inc = eos & ~passed & ~holding
        extend = inc & (ext < MAX_EXT)
        ext = np.where(extend, ext + 1, ext)
        holding = holding | (inc & ~extend)
        newseg = adv | extend
        seg = np.where(newseg, seg + 1, seg)
        k = np.where(newseg, 0, k)
    onset = sc.onset
    return dict(decision=decision, t=t_dec - onset, failed=failed, phase=phase)


def oracle(sc, rate, scrape, seeds=1000, rng=None, nmax=20000):
    """Wald SPRT (alpha=beta=0.01) on the canary's requests one by one from the onset, knowing
    p0 = baseline rate, p1 = true canary rate, at the weight of the step the onset falls in.
    Returns per-request (time, failed) and snapped to the next scrape look."""
    rng = rng or np.random.default_rng(999)
    w = PLAN[0][0] if sc.onset < 300 else (PLAN[1][0] if sc.onset < 600 else PLAN[2][0])
    p0 = sc.pb; p1 = min(sc.pb + sc.dpp, 1.0)
    up, lo = math.log(99), -math.log(99)
    le = math.log(p1 / p0) if p0 > 0 else 50.0
    ls = math.log((1 - p1) / (1 - p0))
    ts, fs, tsn, fsn = [], [], [], []
    lam = rate * w
    for s in range(seeds):
        x = rng.random(nmax) < p1
        llr = np.cumsum(np.where(x, le, ls))
        hit = np.nonzero((llr >= up) | (llr <= lo))[0]
        i = hit[0] if len(hit) else nmax - 1
        t = rng.gamma(i + 1, 1 / lam)
        f = x[: i + 1].sum()
        ts.append(t); fs.append(f)
        # snapped: the decision acts at the next scrape after onset-relative time t
        ph = rng.uniform(0, scrape)   # offset of the scrape grid relative to the onset
        tn = ph + math.ceil(max(t - ph, 0) / scrape) * scrape
        fsn.append(f + rng.poisson(lam * p1 * (tn - t)))
        tsn.append(tn)
    return np.array(ts), np.array(fs), np.array(tsn), np.array(fsn)


def summarize(res):
    d = res["decision"]
    ab = d == 1
    out = dict(abort=ab.mean(), promote=(d == 2).mean(), undecided=(d == 0).mean())
    if ab.any():
        out["t_med"] = float(np.median(res["t"][ab])); out["t_p95"] = float(np.percentile(res["t"][ab], 95))
        out["failed_med"] = float(np.median(res["failed"][ab]))
    pr = d == 2
    if pr.any():
        out["promo_med"] = float(np.median(res["t"][pr]))
    return out


if __name__ == "__main__":
    print("see run_all.py")
