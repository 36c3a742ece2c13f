"""Latency abort side of design.md §4 (intersection-union bracket, per-block min(f, g)),
fixed schedule 10/30/60 % x 300 s, looks every 15 s, blocks of 4 looks. Validity and power."""
import sys, math, json
import numpy as np
from scipy.stats import norm

ISTIO = np.array([0.5,1,5,10,25,50,100,250,500,1000,2500,5000,10000,30000,60000,300000,600000,1800000,3600000.])
FINE = np.exp(np.arange(np.log(1.0), np.log(60000.0), np.log(1.1)))
Q, TAU, ALPHA_L = 0.99, 0.20, 0.005
U = np.array([0.5, 1, 2, 4, 8, 16])
SCRAPE, BLOCK = 15.0, 4
Q_HALF = 0.5

def tail(b, med, sig):   # P(latency > b), lognormal
    return norm.sf((np.log(b) - np.log(med)) / sig)

def run(rate, canary, bounds, seeds=1000, blips=(), rng=None):
    """canary(t) -> (med, sig); baseline (45, 0.7) scaled by blips (both sides)."""
    rng = rng or np.random.default_rng(7)
    sb = tail(bounds, 45, 0.7)
    i = np.nonzero(sb <= (1 - Q) * Q_HALF)[0][0]; bp = bounds[i]
    j = np.nonzero(bounds >= (1 + TAU) * bp)[0][0]; B = bounds[j]
    pb_est = sb[i]
    # plug-in v for g: maximise E ln g per baseline request at S_b = pb_est
    vs = np.linspace(0.01, 0.99, 99)
    v = vs[np.argmax(pb_est * np.log1p(-vs) - np.log1p(-(1 - Q) * vs))]
    logS = np.full((seeds, len(U)), -np.inf)
    aborted = np.zeros(seeds, bool); t_ab = np.full(seeds, np.nan)
    yc = np.zeros(seeds); mc = np.zeros(seeds); yb = np.zeros(seeds); mb = np.zeros(seeds)
    blk = 0; seg = 1
    for li in range(1, int(900 / SCRAPE) + 1):
        t = li * SCRAPE; w = 0.1 if t <= 300 else (0.3 if t <= 600 else 0.6)
        f_bl = 1.0
        for (s0, d0, fac) in blips:
            if s0 < t <= s0 + d0: f_bl = fac
        N = rng.poisson(rate * SCRAPE, seeds); nc = rng.binomial(N, w); nb = N - nc
        med, sig = canary(t)
        yc += rng.binomial(nc, tail(B, med * f_bl, sig)); mc += nc
        yb += rng.binomial(nb, tail(bp, 45 * f_bl, 0.7)); mb += nb
        if li % BLOCK == 0:
            blk += 1
            lw = -math.log(blk * (blk + 1.0))
            lf = yc[:, None] * np.log1p(U)[None, :] - mc[:, None] * np.log1p((1 - Q) * U)[None, :]
            lg = yb * math.log1p(-v) - mb * math.log1p(-(1 - Q) * v)
            lfac = np.minimum(lf, lg[:, None])
            logS = np.logaddexp(logS, lw) + lfac
            logM = np.logaddexp.reduce(logS, axis=1) - math.log(len(U))
            new = ~aborted & (logM >= math.log(1 / ALPHA_L))
            t_ab[new] = t; aborted |= new
            yc[:] = 0; mc[:] = 0; yb[:] = 0; mb[:] = 0
    return dict(abort=float(aborted.mean()), t_med=float(np.nanmedian(t_ab)) if aborted.any() else None,
                bracket=(float(bp), float(B)))

if __name__ == "__main__":
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    out = {}
    scen = {
        "A/A": lambda t: (45, 0.7),
        "1.1x (0.5 tol)": lambda t: (45 * 1.1, 0.7),
        "1.2x (= tol)": lambda t: (45 * 1.2, 0.7),
        "median x1.5, p99 unchanged": lambda t: (67.5, math.log(230.6 / 67.5) / norm.ppf(0.99)),
        "1.4x (2 tol)": lambda t: (45 * 1.4, 0.7),
        "2.5x": lambda t: (45 * 2.5, 0.7),
        "3x": lambda t: (45 * 3, 0.7),
    }
    for bname, bounds in (("istio", ISTIO), ("fine1.1", FINE)):
        for name, can in scen.items():
            for rate in (20, 200, 2000):
                out[f"{bname}|{name}|{rate}rps"] = run(rate, can, bounds, seeds)
        for rate in (20, 200, 2000):
            out[f"{bname}|blips 3x both sides 60s @150,450 + canary 1.1x|{rate}rps"] = run(
                rate, scen["1.1x (0.5 tol)"], bounds, seeds, blips=[(150, 60, 3.0), (450, 60, 3.0)])
    for k, v in out.items(): print(k, v)
    json.dump(out, open("results_latency.json", "w"), indent=1)
