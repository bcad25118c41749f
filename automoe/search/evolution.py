"""Evolutionary architecture search (HAT arXiv 2005.14187 §3.3; AutoMoE arXiv 2210.07535 §3.3).

Pure loop: `fitness(arch) -> float` (lower is better, e.g. supernet validation loss with
inherited weights) and `constraint(arch) -> bool` (e.g. predicted latency <= budget) are
injected. Every draw of an initial member or a child is bounded by `max_tries` and fails with
`InfeasibleConstraint` instead of spinning forever. The state after every iteration (population,
fitness cache, RNG state) is JSON, so an interrupted search resumes to exactly the same result.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Callable

from ..config import ArchConfig, SearchSpace
from . import space as genes


class InfeasibleConstraint(RuntimeError):
    """No architecture satisfying the constraint was found within `max_tries` draws."""


@dataclass(frozen=True)
class EvolutionConfig:
    """Search hyper-parameters (defaults: HAT/AutoMoE)."""

    population: int = 125
    parents: int = 25
    mutations: int = 50
    mutation_prob: float = 0.3
    crossovers: int = 50
    iterations: int = 30
    max_tries: int = 10_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.parents > self.population or self.parents < 1:
            raise ValueError(f"parents={self.parents} must be in 1..population={self.population}")
        if self.parents + self.mutations + self.crossovers != self.population:
            raise ValueError(f"parents + mutations + crossovers ({self.parents}+{self.mutations}+{self.crossovers}) "
                             f"must equal population={self.population}")
        if not 0 <= self.mutation_prob <= 1 or self.iterations < 1 or self.max_tries < 1:
            raise ValueError("need 0 <= mutation_prob <= 1, iterations >= 1 and max_tries >= 1")


@dataclass
class SearchState:
    """Everything needed to continue a search: JSON-serialisable."""

    iteration: int = 0
    population: list[list[int]] = field(default_factory=list)
    fitness: dict[str, float] = field(default_factory=dict)  # gene key -> fitness
    rng_state: list | None = None
    history: list[dict] = field(default_factory=list)  # best fitness per iteration
    seconds: dict | None = None  # the search's wall and CPU seconds so far (kept by the caller)

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SearchState":
        """Inverse of `to_dict`."""
        return cls(**data)


def gene_key(gene) -> str:
    """Stable string key of a gene (for the fitness cache and logs)."""
    return ",".join(map(str, gene))


def _draw(make: Callable[[], tuple], ok: Callable[[tuple], bool], max_tries: int, what: str) -> tuple:
    for _ in range(max_tries):
        gene = make()
        if ok(gene):
            return gene
    raise InfeasibleConstraint(
        f"no {what} satisfied the constraint in {max_tries} tries: the budget is probably infeasible for "
        "this search space; loosen it (e.g. a larger --latency-ms or --gflops) or raise max_tries"
    )


def _set_rng(rng: random.Random, state: list) -> None:
    version, internal, gauss = state
    rng.setstate((version, tuple(internal), gauss))


def evolve(space: SearchSpace, fitness: Callable[[ArchConfig], float], constraint: Callable[[ArchConfig], bool],
           config: EvolutionConfig = EvolutionConfig(), *, state: SearchState | None = None,
           on_iteration: Callable[[SearchState], None] | None = None,
           on_evaluate: Callable[[tuple, ArchConfig, float], None] | None = None,
           stop_after: int | None = None,
           evaluate_many: Callable[[list[ArchConfig]], list[float]] | None = None
           ) -> tuple[ArchConfig, float, SearchState]:
    """Run (or resume) the search; returns (best architecture, its fitness, final state).

    `on_iteration(state)` is called after every iteration (checkpoint it); `on_evaluate(gene,
    arch, fitness)` after every new fitness evaluation (log it). `stop_after` ends the run after
    that many iterations of this call (used to test resuming). `evaluate_many(archs)`, if given,
    scores all new architectures of a generation at once (e.g. a process pool's map); it must
    return what `fitness` would, so the search result does not depend on it.
    """
    rng = random.Random(config.seed)
    state = state or SearchState()
    if state.rng_state is not None:
        _set_rng(rng, state.rng_state)
    ok = lambda g: constraint(genes.decode(space, g))  # noqa: E731

    def score(gene: tuple) -> float:  # every gene ranked was scored by `score_all` first
        return state.fitness[gene_key(gene)]

    def score_all(population: list[tuple]) -> None:
        todo = [g for g in dict.fromkeys(population) if gene_key(g) not in state.fitness]
        archs = [genes.decode(space, g) for g in todo]
        values = evaluate_many(archs) if evaluate_many is not None and archs else [fitness(a) for a in archs]
        for gene, arch, value in zip(todo, archs, values):
            state.fitness[gene_key(gene)] = float(value)
            if on_evaluate is not None:
                on_evaluate(gene, arch, float(value))

    if not state.population:
        state.population = [list(_draw(lambda: genes.sample(space, rng), ok, config.max_tries, "random architecture"))
                            for _ in range(config.population)]
    done_here = 0
    while state.iteration < config.iterations:
        population = [tuple(g) for g in state.population]
        score_all(population)
        ranked = sorted(population, key=lambda g: (score(g), gene_key(g)))
        parents = ranked[: config.parents]
        children = []
        for _ in range(config.mutations):
            children.append(_draw(lambda: genes.mutate(space, rng.choice(parents), config.mutation_prob, rng),
                                  ok, config.max_tries, "mutated child"))
        for _ in range(config.crossovers):
            children.append(_draw(lambda: genes.crossover(space, rng.choice(parents), rng.choice(parents), rng),
                                  ok, config.max_tries, "crossover child"))
        state.population = [list(g) for g in parents + children]
        state.iteration += 1
        state.history.append({"iteration": state.iteration, "best_fitness": score(parents[0]),
                              "best_gene": list(parents[0])})
        state.rng_state = [list(x) if isinstance(x, tuple) else x for x in rng.getstate()]
        if on_iteration is not None:
            on_iteration(state)
        done_here += 1
        if stop_after is not None and done_here >= stop_after:
            break
    score_all([tuple(g) for g in state.population])
    best = min((tuple(g) for g in state.population), key=lambda g: (score(g), gene_key(g)))
    return genes.decode(space, best), score(best), state
