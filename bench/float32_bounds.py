"""float32 error of batch_gd / preconditioned_gd (d = 8, n = 64) against the declared bounds (docs/algorithms.md,
"Where the zoo's float32 error comes from"): the tasks of bench/float32_circuits.py, clipped to the bounds.

    python bench/float32_bounds.py
"""
import numpy as np, torch, iclconstruct as ic, sys
C,R=ic.circuits,ic.reference
d=8; n=64
for xb,yb in [(None,None),(4.5,20.0),(3.0,10.0)]:
  for name,make,ref in [("batch_gd",lambda: C.batch_gd(d,0.005,steps=3,x_bound=xb,y_bound=yb,dtype=torch.float32),lambda X,y:R.batch_gd(X,y,0.005,3)),
                        ("pgd",lambda: C.preconditioned_gd(d,0.005,3,P=np.diag(np.linspace(0.5,1.5,d)),x_bound=xb,y_bound=yb,dtype=torch.float32),lambda X,y:R.preconditioned_gd(X,y,0.005,3,P=np.diag(np.linspace(0.5,1.5,d))))]:
    m=make(); worst=0; rng=np.random.default_rng(1000*d+n)
    for _ in range(4):
        Q=np.linalg.qr(rng.standard_normal((d,d)))[0]
        X=(rng.standard_normal((n+1,d))*rng.uniform(0.2,1.5,d))@Q.T
        y=X@rng.standard_normal(d)
        X=np.clip(X,-m.layout['x'].bound*0.999,m.layout['x'].bound*0.999); y=np.clip(y,-m.layout['y'].bound*.999,m.layout['y'].bound*.999)
        Xn,yn,xq=X[:n],y[:n],X[n]
        want=np.array([(ref(Xn[:k],yn[:k]) if k else np.zeros(d))@(xq if k==n else Xn[k]) for k in range(n+1)])
        got=np.asarray(m(ic.tokens.encode(Xn,yn,xq),check=False),dtype=np.float64)[0]
        worst=max(worst,(np.abs(got-want)/(1+np.abs(want))).max())
    print(name, m.layout['x'].bound, m.layout['y'].bound, f"{worst:.2e}")
