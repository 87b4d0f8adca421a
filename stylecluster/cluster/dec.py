"""Deep Embedded Clustering (Xie, Girshick & Farhadi, ICML 2016).

1. Pretrain a stacked denoising autoencoder on the (isotropically scaled) fused vectors.
2. Run k-means in its latent space for the initial centroids μ_j.
3. Fine-tune encoder and centroids by minimising KL(P ‖ Q) between the Student-t soft assignments
   Q (eq. 1) and a sharpened target P (eq. 3) recomputed every ``update_interval`` steps; stop when
   fewer than ``tol`` of the points changed cluster since the last update.

The paper pretrains greedily layer by layer (d-500-500-2000-10); here the autoencoder is
pretrained end to end with input dropout, as common re-implementations do, with narrower layers
and step (not epoch) budgets so that fitting time does not grow with the collection (< 2 min at
10k points on two CPU cores). Above ``max_fit_samples`` points (50,000) DEC is fitted on a seeded
subsample and the other points are assigned in batches, like new ones.
"""
from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from .base import ClusterMethod, capped_k, register_method
from .reduce import IsotropicScaler, subsample


def soft_assignment(z: torch.Tensor, centers: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Eq. 1: q_ij = (1 + ||z_i - μ_j||²/α)^(-(α+1)/2) / Σ_j' (1 + ||z_i - μ_j'||²/α)^(-(α+1)/2)."""
    import torch
    # expanded rather than torch.cdist, whose gradient is undefined at zero distance
    d2 = (z.pow(2).sum(1, keepdim=True) - 2.0 * z @ centers.T + centers.pow(2).sum(1)).clamp_min(0.0)
    q = (1.0 + d2 / alpha).pow(-(alpha + 1.0) / 2.0)
    return q / q.sum(dim=1, keepdim=True)


def target_distribution(q: torch.Tensor) -> torch.Tensor:
    """Eq. 3: p_ij = (q_ij² / f_j) / Σ_j' (q_ij'² / f_j'), with soft cluster frequencies f_j = Σ_i q_ij."""
    weight = q.pow(2) / q.sum(dim=0)
    return weight / weight.sum(dim=1, keepdim=True)


def clustering_loss(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Eq. 2, KL(P ‖ Q) = Σ_i Σ_j p_ij log(p_ij / q_ij), averaged over the points i."""
    import torch
    return (torch.xlogy(p, p) - p * torch.log(q)).sum() / q.shape[0]


def _mlp(sizes: list[int]) -> nn.Sequential:
    from torch import nn
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:  # no activation on the latent code or the reconstruction
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@register_method("dec")
class DECClustering(ClusterMethod):
    """Deep Embedded Clustering.

    Parameters
    ----------
    k : int or None
        Number of clusters (None: ``default_k`` = 10). Clusters that end empty are dropped.
    hidden : tuple of int
        Encoder layer widths; the decoder mirrors them.
    latent_dim : int
    pretrain_steps : int
        Autoencoder minibatch steps (Adam).
    dropout : float
        Input corruption of the denoising autoencoder.
    max_steps : int
        Upper bound on clustering steps (SGD with momentum, as in the paper).
    update_interval : int
        Steps between target-distribution updates (T in the paper).
    tol : float
        Stop when fewer than this share of assignments changed between two target updates.
    batch_size, lr_pretrain, lr : optimisation settings.
    alpha : float
        Student-t degrees of freedom (1 in the paper).
    n_threads : int
        CPU threads while fitting (torch, and BLAS/OpenMP of the k-means step). 1 keeps results
        identical across machines (the thread count changes the order of floating-point sums)
        and is the fastest choice on a busy machine: with two threads on two shared cores,
        pretraining ran 13x slower here.
    max_fit_samples : int
        Fit on a seeded random subsample of at most this many points (0: all) and assign the
        others with ``predict_proba``: every target update encodes all fitted points, so the
        fit grows with n. With 50,000 the fit took 86 s at 100k images and 108 s at a million
        (``benchmarks/scale.py``, one thread, a busy machine), within the 5-minute target with
        room for a quieter machine's noise; its ARI to the planted components was that of
        k-means (0.58-0.60).
    random_state : int

    Attributes
    ----------
    encoder_, scaler_, cluster_centers_ (latent), labels_, probabilities_, n_clusters_,
    target_ : the last target distribution P over the fitted points (before empty clusters are
    dropped), loss_history_ : (step, KL) at each target update, n_steps_ : clustering steps run,
    converged_ : whether the tol criterion stopped training.
    """

    k_meaning = "exact"
    has_proba = True
    default_k = 10
    # DEC refines a k-means partition, so k-means' k is its k; fitting DEC for each of 19
    # candidate k took > 10 min on 3,271 images here, k-means seconds.
    k_selection_proxy = "kmeans"
    fits_subsample = True

    def __init__(
        self,
        k: int | None = None,
        hidden: tuple[int, ...] = (256, 256, 512),
        latent_dim: int = 10,
        pretrain_steps: int = 1500,
        dropout: float = 0.2,
        max_steps: int = 2000,
        update_interval: int = 100,
        tol: float = 0.001,
        batch_size: int = 256,
        lr_pretrain: float = 1e-3,
        lr: float = 0.01,
        alpha: float = 1.0,
        n_threads: int = 1,
        max_fit_samples: int = 50_000,
        random_state: int = 0,
    ):
        self.k = k
        self.hidden = hidden
        self.latent_dim = latent_dim
        self.pretrain_steps = pretrain_steps
        self.dropout = dropout
        self.max_steps = max_steps
        self.update_interval = update_interval
        self.tol = tol
        self.batch_size = batch_size
        self.lr_pretrain = lr_pretrain
        self.lr = lr
        self.alpha = alpha
        self.n_threads = n_threads
        self.max_fit_samples = max_fit_samples
        self.random_state = random_state

    def _batches(self, n: int, steps: int, generator: torch.Generator):
        """Row indices of ``steps`` minibatches, reshuffling after every pass over the data."""
        import torch
        size = min(self.batch_size, n)
        order, pos = torch.randperm(n, generator=generator), 0
        for _ in range(steps):
            if pos + size > n:
                order, pos = torch.randperm(n, generator=generator), 0
            yield order[pos : pos + size]
            pos += size

    def _pretrain(self, X: torch.Tensor, generator: torch.Generator) -> nn.Sequential:
        import torch
        from torch import nn
        sizes = [X.shape[1], *self.hidden, self.latent_dim]
        encoder, decoder = _mlp(sizes), _mlp(sizes[::-1])
        model = nn.Sequential(encoder, decoder)
        optimiser = torch.optim.Adam(model.parameters(), lr=self.lr_pretrain)
        keep = 1.0 - self.dropout
        for rows in self._batches(len(X), self.pretrain_steps, generator):
            x = X[rows]
            mask = (torch.rand(x.shape, generator=generator) < keep).to(x.dtype) / keep
            loss = (model(x * mask) - x).pow(2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return encoder

    def _encode(self, X: torch.Tensor) -> torch.Tensor:
        import torch
        with torch.no_grad():
            return torch.cat([self.encoder_(chunk) for chunk in X.split(8192)])

    def fit(self, X: np.ndarray, y=None) -> "DECClustering":
        import torch
        threads = torch.get_num_threads()
        torch.set_num_threads(self.n_threads)
        try:
            with threadpool_limits(self.n_threads):  # the k-means initialisation's OpenMP/BLAS
                return self._fit(np.asarray(X, dtype=np.float32))
        finally:
            torch.set_num_threads(threads)

    def _fit(self, X: np.ndarray) -> "DECClustering":
        import torch
        from torch import nn
        self.fit_rows_ = subsample(len(X), self.max_fit_samples, self.random_state)
        fit_points = X[self.fit_rows_]
        k = capped_k(self.default_k if self.k is None else int(self.k), fit_points, "dec")
        self.scaler_ = IsotropicScaler().fit(fit_points)
        data = torch.as_tensor(self.scaler_.transform(fit_points), dtype=torch.float32)
        del fit_points
        generator = torch.Generator().manual_seed(self.random_state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)  # layer initialisation
            self.encoder_ = self._pretrain(data, generator)

        latent = self._encode(data)
        kmeans = KMeans(n_clusters=k, n_init=10, random_state=self.random_state).fit(latent.numpy())
        centers = nn.Parameter(torch.as_tensor(kmeans.cluster_centers_, dtype=torch.float32))
        optimiser = torch.optim.SGD([*self.encoder_.parameters(), centers], lr=self.lr, momentum=0.9)

        labels = torch.as_tensor(kmeans.labels_, dtype=torch.int64)
        self.loss_history_, self.converged_, self.n_steps_ = [], False, 0
        for step, rows in enumerate(self._batches(len(data), self.max_steps, generator)):
            if step % self.update_interval == 0:
                with torch.no_grad():
                    q_all = soft_assignment(self._encode(data), centers, self.alpha)
                    target = target_distribution(q_all)
                    self.loss_history_.append((step, float(clustering_loss(q_all, target))))
                new_labels = q_all.argmax(dim=1)
                changed = float((new_labels != labels).float().mean())
                labels = new_labels
                if step > 0 and changed < self.tol:
                    self.converged_ = True
                    break
            loss = clustering_loss(soft_assignment(self.encoder_(data[rows]), centers, self.alpha), target[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            self.n_steps_ = step + 1

        self.encoder_.eval()
        with torch.no_grad():
            q_all = soft_assignment(self._encode(data), centers, self.alpha)
        self.target_ = target_distribution(q_all).numpy()
        used = torch.unique(q_all.argmax(dim=1))
        self.cluster_centers_ = centers.detach()[used].numpy()
        self.labels_, self.probabilities_ = self.assign(X)
        self.n_clusters_ = len(self.cluster_centers_)
        return self

    def _saved_state(self) -> dict:
        """The encoder as data (layer sizes and weight arrays) for :mod:`~stylecluster.cluster.persist`."""
        from torch import nn
        state = dict(vars(self))
        linears = [m for m in self.encoder_ if isinstance(m, nn.Linear)]
        sizes = [linears[0].in_features] + [m.out_features for m in linears]
        state["encoder_"] = {"sizes": sizes, "weights": {k: v.detach().cpu().numpy() for k, v in self.encoder_.state_dict().items()}}
        return state

    def _restore_state(self, state: dict) -> None:
        import torch
        encoder = state.pop("encoder_")
        self.__dict__.update(state)
        self.encoder_ = _mlp([int(n) for n in encoder["sizes"]])
        self.encoder_.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in encoder["weights"].items()})
        self.encoder_.eval()

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Latent coordinates of X."""
        import torch
        return self._encode(torch.as_tensor(self.scaler_.transform(X), dtype=torch.float32)).numpy()

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        import torch
        z = torch.as_tensor(self.transform(X))
        return soft_assignment(z, torch.as_tensor(self.cluster_centers_), self.alpha).numpy().astype(np.float64)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)
