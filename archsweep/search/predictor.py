"""Accuracy predictors over an encoding: DNGO (Snoek et al., 2015), as arch2vec's Bayesian optimisation uses it,
and the rank correlations the representation table reports.

DNGO: a small tanh network is trained by mean-squared error on the labelled cells; its last hidden layer (plus a
bias) then feeds a Bayesian linear regression whose weight and noise precisions are set by the evidence
approximation (MacKay's fixed point). Fast to refit every round, and it gives a predictive variance for the
expected improvement. A network that fits a few labels exactly would drive the noise variance to zero and the
search would stop exploring, so the noise standard deviation is kept at least `min_noise` of the labels' spread.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import stats


class DNGO:
    def __init__(self, hidden: tuple[int, ...] = (50, 50, 50), steps: int = 500, lr: float = 1e-2, seed: int = 0,
                 threads: int = 1, min_noise: float = 0.05):
        self.hidden, self.steps, self.lr, self.seed, self.threads = hidden, steps, lr, seed, threads
        self.max_beta = 1.0 / min_noise**2

    def fit(self, x: np.ndarray, y: np.ndarray) -> DNGO:
        import torch

        x, y = np.asarray(x, np.float32), np.asarray(y, np.float64)
        if len(x) < 2:
            raise ValueError(f"DNGO needs at least 2 labelled cells, got {len(x)}")
        self.x_mean, self.x_std = x.mean(0), x.std(0) + 1e-6
        self.y_mean, self.y_std = y.mean(), y.std() + 1e-12
        xt = torch.from_numpy((x - self.x_mean) / self.x_std)
        yt = torch.from_numpy(((y - self.y_mean) / self.y_std).astype(np.float32))
        old = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            torch.manual_seed(self.seed)
            sizes = [x.shape[1], *self.hidden]
            layers: list[torch.nn.Module] = []
            for a, b in itertools.pairwise(sizes):
                layers += [torch.nn.Linear(a, b), torch.nn.Tanh()]
            self.body = torch.nn.Sequential(*layers)
            head = torch.nn.Linear(sizes[-1], 1)
            optimizer = torch.optim.Adam([*self.body.parameters(), *head.parameters()], lr=self.lr)
            for _ in range(self.steps):
                loss = torch.nn.functional.mse_loss(head(self.body(xt)).squeeze(-1), yt)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        finally:
            torch.set_num_threads(old)
        self._bayesian_regression(self._features(x), (y - self.y_mean) / self.y_std)
        return self

    def _features(self, x: np.ndarray) -> np.ndarray:
        import torch

        old = torch.get_num_threads()
        torch.set_num_threads(self.threads)  # as in fit: the same numbers in any process
        try:
            with torch.no_grad():
                h = self.body(torch.from_numpy((np.asarray(x, np.float32) - self.x_mean) / self.x_std)).double()
        finally:
            torch.set_num_threads(old)
        return np.concatenate([h.numpy(), np.ones((len(h), 1))], axis=1)

    def _bayesian_regression(self, phi: np.ndarray, y: np.ndarray, iterations: int = 100) -> None:
        """Weight precision alpha and noise precision beta by the evidence approximation (Bishop, PRML 3.5.2)."""
        n, d = phi.shape
        eig = np.linalg.eigvalsh(phi.T @ phi).clip(min=0)
        alpha, beta = 1.0, 1.0
        for _ in range(iterations):
            a = beta * phi.T @ phi + alpha * np.eye(d)
            mean = beta * np.linalg.solve(a, phi.T @ y)
            gamma = float(np.sum(beta * eig / (alpha + beta * eig)))
            new_alpha = gamma / max(float(mean @ mean), 1e-12)
            new_beta = max(n - gamma, 1e-6) / max(float(np.sum((y - phi @ mean) ** 2)), 1e-12)
            converged = abs(new_alpha - alpha) < 1e-6 * alpha and abs(new_beta - beta) < 1e-6 * beta
            alpha, beta = min(new_alpha, 1e8), min(new_beta, self.max_beta)
            if converged:
                break
        self.alpha, self.beta = alpha, beta
        self.a_inv = np.linalg.inv(beta * phi.T @ phi + alpha * np.eye(d))
        self.w = beta * self.a_inv @ phi.T @ y

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, standard deviation) of the predicted target, in the target's units."""
        phi = self._features(x)
        mean = phi @ self.w
        var = 1.0 / self.beta + np.einsum("nd,de,ne->n", phi, self.a_inv, phi)
        return mean * self.y_std + self.y_mean, np.sqrt(np.maximum(var, 0.0)) * self.y_std


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float, xi: float = 0.0) -> np.ndarray:
    """E[max(f - best - xi, 0)] under N(mean, std^2), for maximisation."""
    std = np.maximum(std, 1e-12)
    z = (mean - best - xi) / std
    return (mean - best - xi) * stats.norm.cdf(z) + std * stats.norm.pdf(z)


def rank_correlations(predicted: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    """(Kendall tau-b, Spearman rho)."""
    return float(stats.kendalltau(predicted, actual)[0]), float(stats.spearmanr(predicted, actual)[0])
