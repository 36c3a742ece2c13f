import lat_sim, math, json
from lat_sim import *
import numpy as np
out={}
orig = lat_sim.tail
for frac in (0.8,):
    # bracket variant: b' = smallest bound with S_b <= frac*(1-q)
    def run2(rate, canary, bounds, seeds, blips=()):
        sb = tail(bounds, 45, 0.7)
        return run(rate, canary, bounds, seeds, blips)
    src = open('lat_sim.py').read()
for name, can in {"A/A": lambda t:(45,0.7), "1.2x (= tol)": lambda t:(54,0.7), "median x1.5, p99 unchanged": lambda t: (67.5, math.log(230.6/67.5)/norm.ppf(0.99)), "1.4x": lambda t:(63,0.7), "2.5x": lambda t:(112.5,0.7), "3x": lambda t:(135,0.7)}.items():
    for bname,bounds in (("istio",ISTIO),("fine1.1",FINE)):
        for rate in (20,200,2000):
            lat_sim.Q_HALF = 0.8
            out[f"{bname}|{name}|{rate}rps|b' at S_b<=0.8(1-q)"] = run(rate, can, bounds, 500)
            print(list(out.items())[-1], flush=True)
json.dump(out, open("results_latency_var.json","w"), indent=1)
