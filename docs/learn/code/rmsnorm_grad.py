#!/usr/bin/env python3
"""RMSNorm's gradient by hand: the formula backends/reference/rmsnorm.cpp uses, against central
differences, for one row of 6 numbers. Plain Python, float64. Run: python3 docs/learn/code/rmsnorm_grad.py"""
import math

eps = 1e-5
x = [0.5, -1.2, 2.0, 0.1, -0.7, 1.4]   # one row of the residual stream
w = [1.0, 0.9, 1.1, 1.2, 0.8, 1.0]     # the norm's gain
g = [0.3, -0.5, 0.2, 0.7, -0.1, 0.4]   # dL/dy: what the layer above sends back


def rmsnorm(x, w):
    r = 1 / math.sqrt(sum(v * v for v in x) / len(x) + eps)  # rstd
    return [v * r * wc for v, wc in zip(x, w)], r


def loss(x, w):  # L = Σ g·y: its gradient with respect to y is g
    y, _ = rmsnorm(x, w)
    return sum(gc * yc for gc, yc in zip(g, y))


# The formula: x̂ = x·r, G = g·w,  dx = r·(G − x̂·mean(G·x̂)),  dw = g·x̂
_, r = rmsnorm(x, w)
xh = [v * r for v in x]
G = [gc * wc for gc, wc in zip(g, w)]
m = sum(a * b for a, b in zip(G, xh)) / len(x)
dx = [r * (Gc - xc * m) for Gc, xc in zip(G, xh)]
dw = [gc * xc for gc, xc in zip(g, xh)]


def numeric(f, v, i, h=1e-6):  # central difference in entry i of v
    v[i] += h
    up = f()
    v[i] -= 2 * h
    down = f()
    v[i] += h
    return (up - down) / (2 * h)


worst = 0.0
for name, v, analytic in (("dx", x, dx), ("dw", w, dw)):
    for i in range(len(v)):
        n = numeric(lambda: loss(x, w), v, i)
        worst = max(worst, abs(n - analytic[i]))
        print(f"{name}[{i}]  formula {analytic[i]: .8f}  finite differences {n: .8f}")
print(f"largest difference: {worst:.1e}")
