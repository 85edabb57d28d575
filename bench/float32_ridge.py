"""float32 ridge accuracy over lam, d, n, isotropic and anisotropic x (docs/algorithms.md, "float32 ridge, what holds").

Usage: PYTHONPATH=src python bench/float32_ridge.py 0.1,0.3,1,10 2,4,8 8,32,64 [float32|float64]
"""
import sys, time, numpy as np, torch, iclconstruct as ic
from iclconstruct.errors import ICLConstructError
torch.set_num_threads(2)
def tasks(d, n, kind, B, seed, xb=6.0, yb=30.0):
    rng = np.random.default_rng(seed); Xs=[];ys=[];qs=[]
    for b in range(B):
        scales = np.exp(rng.uniform(np.log(0.1), np.log(3.0), d)) if kind=="aniso" else np.ones(d)
        R = np.linalg.qr(rng.standard_normal((d, d)))[0]
        Xall = (rng.standard_normal((n+1,d))*scales)@R.T
        Xall *= min(1.0, 0.999*xb/np.abs(Xall).max())
        w = rng.standard_normal(d); yall = Xall@w + 0.1*rng.standard_normal(n+1)
        yall *= min(1.0, 0.999*yb/np.abs(yall).max())
        Xs.append(Xall[:n]); ys.append(yall[:n]); qs.append(Xall[n])
    return np.array(Xs), np.array(ys), np.array(qs)
lams=[float(v) for v in sys.argv[1].split(",")]; ds=[int(v) for v in sys.argv[2].split(",")]; ns=[int(v) for v in sys.argv[3].split(",")]
dtype = getattr(torch, sys.argv[4]) if len(sys.argv)>4 else torch.float32
for d in ds:
  for lam in lams:
    t=time.time(); import os; m = ic.circuits.ridge(d, lam, dtype=dtype, max_len=2*max(ns)+1)
    for n in ns:
      for kind in ("iso","aniso"):
        X,y,q = tasks(d,n,kind,4,n*7+d)
        ref = np.einsum("bd,bd->b", q, ic.reference.ridge(X,y,lam))
        try:
            out = m.predict(X,y,q); e = np.max(np.abs(out-ref)/(1+np.abs(ref))); s=f"{e:.2e}"
        except ICLConstructError as ex:
            s = "REFUSED " + str(ex)[:150]
        print(f"d={d} lam={lam} n={n} {kind}: {s}", flush=True)
    print(f"  (d={d} lam={lam} {time.time()-t:.1f}s)", flush=True)
