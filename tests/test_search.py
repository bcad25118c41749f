"""Genes and the evolutionary search, with fake fitness and constraints (no model needed)."""

import json
import random

import pytest

from automoe.config import SearchSpace
from automoe.search import space as genes
from automoe.search.evolution import EvolutionConfig, InfeasibleConstraint, SearchState, evolve


@pytest.mark.parametrize("preset", ["small", "wmt14", "tiny"])
def test_gene_round_trip_500_archs(preset):
    space = SearchSpace.preset(preset)
    rng = random.Random(0)
    layout = genes.GeneLayout.of(space)
    for _ in range(500):
        arch = space.sample(rng)
        gene = genes.encode(space, arch)
        assert len(gene) == len(layout.names)
        assert genes.decode(space, gene) == arch


@pytest.mark.parametrize("preset", ["small", "tiny"])
def test_mutation_and_crossover_stay_valid(preset):
    space = SearchSpace.preset(preset)
    rng = random.Random(1)
    population = [genes.sample(space, rng) for _ in range(20)]
    for _ in range(500):
        child = genes.mutate(space, rng.choice(population), 0.5, rng)
        assert space.contains(genes.decode(space, child))
        child = genes.crossover(space, rng.choice(population), rng.choice(population), rng)
        assert space.contains(genes.decode(space, child))
        population[rng.randrange(20)] = child
    assert len(set(population)) > 5


def _target_distance(space, target):
    t = genes.encode(space, target)
    layout = genes.GeneLayout.of(space)

    def fitness(arch):
        g = genes.encode(space, arch)
        # distance over the values that matter: widths, depths and the active expert widths
        return sum(abs(a - b) / max(opts) for a, b, opts in zip(g, t, layout.choices))
    return fitness


SMALL_CFG = EvolutionConfig(population=30, parents=6, mutations=12, crossovers=12, iterations=12, seed=3)


def test_evolution_finds_hidden_target_under_constraint():
    space = SearchSpace.preset("small")
    target = space.sample(random.Random(42)).replace(encoder_embed_dim=256)
    fitness = _target_distance(space, target)
    constraint = lambda a: a.encoder_embed_dim == 256  # noqa: E731
    rng = random.Random(7)
    random_best = min(fitness(a) for a in (space.sample(rng) for _ in range(30 * 12)) if constraint(a))
    best, score, state = evolve(space, fitness, constraint, SMALL_CFG)
    assert constraint(best) and all(constraint(genes.decode(space, g)) for g in state.population)
    assert score < 0.5 * random_best  # far better than random search with the same number of draws
    assert [h["best_fitness"] for h in state.history] == sorted([h["best_fitness"] for h in state.history],
                                                                reverse=True)


def test_infeasible_constraint_raises_instead_of_looping():
    space = SearchSpace.preset("tiny")
    cfg = EvolutionConfig(population=4, parents=2, mutations=1, crossovers=1, iterations=2, max_tries=50)
    with pytest.raises(InfeasibleConstraint, match="no random architecture satisfied the constraint in 50 tries"):
        evolve(space, lambda a: 0.0, lambda a: False, cfg)


def test_resume_gives_the_same_final_population(tmp_path):
    space = SearchSpace.preset("small")
    fitness = _target_distance(space, space.sample(random.Random(5)))
    constraint = lambda a: a.decoder_layers <= 3  # noqa: E731
    _, _, full = evolve(space, fitness, constraint, SMALL_CFG)
    _, _, part = evolve(space, fitness, constraint, SMALL_CFG, stop_after=5)
    saved = tmp_path / "state.json"
    saved.write_text(json.dumps(part.to_dict()))
    best, score, resumed = evolve(space, fitness, constraint, SMALL_CFG,
                                  state=SearchState.from_dict(json.loads(saved.read_text())))
    assert resumed.population == full.population and resumed.history == full.history
    assert part.iteration == 5 and resumed.iteration == SMALL_CFG.iterations


def test_batched_evaluation_gives_the_same_search():
    space = SearchSpace.preset("small")
    fitness = _target_distance(space, space.sample(random.Random(9)))
    constraint = lambda a: a.decoder_layers >= 2  # noqa: E731
    batches = []

    def evaluate_many(archs):
        batches.append(len(archs))
        return [fitness(a) for a in reversed(archs)][::-1]  # any evaluation order, results in input order

    serial = evolve(space, fitness, constraint, SMALL_CFG)
    batched = evolve(space, lambda a: pytest.fail("evaluate_many must be used"), constraint, SMALL_CFG,
                     evaluate_many=evaluate_many)
    assert batched[0] == serial[0] and batched[2].population == serial[2].population
    assert batches[0] == SMALL_CFG.population and sum(batches) == len(serial[2].fitness)


def test_config_checks_sizes():
    with pytest.raises(ValueError, match="must equal population"):
        EvolutionConfig(population=10, parents=2, mutations=2, crossovers=2)
