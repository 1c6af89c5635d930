#!/usr/bin/env python3
"""The preference losses (DPO, cDPO, IPO, SimPO) written in PyTorch from their papers, with
autograd for the gradient, compared with llmtk's PreferenceLoss on the cases that
tests/test_align.cpp writes (tests/scripts/preference_golden.sh runs both).

  DPO   (Rafailov et al. 2023), with label smoothing (cDPO):
        h = beta * ((logp_c - ref_c) - (logp_r - ref_r))
        loss = -(1 - eps) * logsigmoid(h) - eps * logsigmoid(-h)
  IPO   (Azar et al. 2023, eq. 17): loss = (((logp_c - ref_c) - (logp_r - ref_r)) - 1 / (2 * beta))^2
  SimPO (Meng et al. 2024): h = beta * (logp_c / |c| - logp_r / |r|) - gamma; loss as DPO's

log p of a reply is the sum of log_softmax(logits)[target] over its counted positions (targets of
-100 are not counted); a batch of P pairs is 2P rows, the chosen first. The loss is the mean over pairs.
"""
import json
import sys

import torch
import torch.nn.functional as F


def check(case):
    rows, T, V = case["shape"]
    P = rows // 2
    logits = torch.tensor(case["logits"], dtype=torch.float64).reshape(rows, T, V).requires_grad_(True)
    targets = torch.tensor(case["targets"], dtype=torch.int64).reshape(rows, T)
    ref = torch.tensor(case["reference"], dtype=torch.float64)
    counted = targets != -100
    logprobs = torch.gather(F.log_softmax(logits, dim=-1), 2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    logp = (logprobs * counted).sum(-1)
    n = counted.sum(-1).to(torch.float64)
    beta, eps, kind = case["beta"], case["label_smoothing"], case["loss_type"]
    if kind == "simpo":
        h = beta * (logp[:P] / n[:P] - logp[P:] / n[P:]) - case["simpo_gamma"]
        losses = -(1 - eps) * F.logsigmoid(h) - eps * F.logsigmoid(-h)
    else:
        ratio = (logp[:P] - ref[:P]) - (logp[P:] - ref[P:])
        if kind == "dpo":
            losses = -(1 - eps) * F.logsigmoid(beta * ratio) - eps * F.logsigmoid(-beta * ratio)
        else:
            losses = (ratio - 1 / (2 * beta)) ** 2
    loss = losses.mean()
    loss.backward()
    got_grad = torch.tensor(case["dlogits"], dtype=torch.float64).reshape(rows, T, V)
    loss_err = abs(loss.item() - case["loss"]) / max(1.0, abs(loss.item()))
    grad_err = (got_grad - logits.grad).abs().max().item()
    print(f"{kind:5s} beta {beta:<4} eps {eps:<4}: loss torch {loss.item():.7f} llmtk {case['loss']:.7f} "
          f"(rel. error {loss_err:.1e}), max |dlogits error| {grad_err:.1e}")
    return loss_err < 1e-6 and grad_err < 1e-6


def main():
    cases = json.load(open(sys.argv[1]))
    ok = all([check(c) for c in cases])
    if len(cases) != 4:
        print(f"expected 4 cases, got {len(cases)}")
        ok = False
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
