"""A local pretraining corpus for the built-in base model: plain prose about the suite's small world.

FLAN's claim is that instruction tuning teaches a pretrained model to *use* what it already knows
when asked in words it has not seen. To show that offline, the built-in base model must know the
world of the procedural suite (people and cities, review words, topics, lists, numbers, spellings)
without ever having seen an instruction about it. So every document here states facts in running
prose, never as a question with an answer slot, and no sentence reuses a template's wording.

Documents are generated from a seed and the suite's word lists, so the corpus (and the model
pretrained on it) is the same on every machine.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from harness.benchmarks.suite import (
    ACTIVITIES,
    CITIES,
    NEGATIVE,
    PEOPLE,
    POSITIVE,
    REVIEW_SUBJECTS,
    TOPIC_KEYWORDS,
    TOPICS,
    WORDS,
)

Writer = Callable[[random.Random], str]

_PARITY_NAMES = ("even", "odd")


def _story(rng: random.Random) -> str:
    person, city, activity = rng.choice(PEOPLE), rng.choice(CITIES), rng.choice(ACTIVITIES)
    other = rng.choice([c for c in CITIES if c != city])
    return rng.choice((
        f"{person} left {other} for {city} and soon {activity}. Everyone in {city} knows {person} now.",
        f"When {person} came to {city}, nobody expected much. Today {person} is the one who {activity}.",
        f"The people of {city} speak warmly of {person}, who {activity}. Before that, {person} lived in {other}.",
        f"{person} lives in {city}. On weekends {person} visits friends in {other}.",
    ))


def _review(rng: random.Random) -> str:
    positive = rng.random() < 0.5
    word = rng.choice(POSITIVE if positive else NEGATIVE)
    subject = rng.choice(REVIEW_SUBJECTS)
    verdict = rng.choice(("I loved it and would gladly go again.", "A happy evening, highly recommended.",
                          "It made my week.", "I liked it a lot.") if positive else
                         ("I regret every minute.", "Sadly a waste of money.", "I would not recommend it.",
                          "I did not like it at all."))
    tone, mood, grade = ("positive", "happy", "good") if positive else ("negative", "unhappy", "bad")
    return rng.choice((
        f"Our {subject} was {word}. {verdict} All in all a {tone} experience, and {word} is the word for it.",
        f"The {subject} was {word}, so we left {mood}. It was a {grade} experience.",
        f"When people call a {subject} {word}, they mean something {tone}: they were {mood} with it.",
    ))


def _lexicon(rng: random.Random) -> str:
    """Word-level knowledge stated both ways round, as a dictionary or an encyclopedia would."""
    positive = rng.random() < 0.5
    word = rng.choice(POSITIVE if positive else NEGATIVE)
    label = rng.randrange(len(TOPICS))
    keyword = rng.choice(TOPIC_KEYWORDS[label])
    tone = "positive" if positive else "negative"
    return rng.choice((
        f"The word {word} has a {tone} sentiment.",
        f"A {tone} word such as {word} describes how someone felt.",
        f"The {keyword} belongs to the world of {TOPICS[label]}.",
        f"If a sentence mentions the {keyword}, it is about {TOPICS[label]}.",
    ))


def _topic(rng: random.Random) -> str:
    label = rng.randrange(len(TOPICS))
    first, second = rng.sample(TOPIC_KEYWORDS[label], 2)
    return rng.choice((
        f"This page is about {TOPICS[label]}. It covers the {first} and the {second}.",
        f"Anyone who loves {TOPICS[label]} has an opinion on the {first}, and on the {second} too.",
        f"In the {TOPICS[label]} section of the magazine you will find the {first} next to the {second}.",
    ))


def _listing(rng: random.Random) -> str:
    items = rng.sample(WORDS, rng.randint(3, 6))
    numbers = rng.sample(range(100), rng.randint(3, 6))
    return rng.choice((
        f"On the table lay a {', a '.join(items)}. The {items[0]} was nearest to the door.",
        f"She packed the {items[0]} first, then the {', then the '.join(items[1:])}.",
        f"The scores were {', '.join(map(str, numbers))}, and the best of them was {max(numbers)}.",
        f"Of {', '.join(map(str, numbers))}, the highest is {max(numbers)} and the lowest is {min(numbers)}.",
    ))


def _numbers(rng: random.Random) -> str:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    n = rng.randint(0, 999)
    x, y = rng.sample(range(1000), 2)
    return rng.choice((
        f"{a} apples and {b} more make {a + b} apples in all.",
        f"She had {a} coins, found {b} more, and ended with {a + b}.",
        f"{n} is an {_PARITY_NAMES[n % 2]} number.",
        f"The team scored {x} points and the visitors {y}, so the {'team' if x > y else 'visitors'} won, "
        f"since {max(x, y)} is more than {min(x, y)}.",
        f"{max(x, y)} is larger than {min(x, y)}, and {min(x, y)} is smaller than {max(x, y)}.",
    ))


def _spelling(rng: random.Random) -> str:
    word, other = rng.sample(WORDS, 2)
    longer, shorter = (word, other) if len(word) >= len(other) else (other, word)
    return rng.choice((
        f"The sign said {word.upper()} in capital letters; in small letters that is {word}.",
        f"Spelled backwards, {word} becomes {word[::-1]}.",
        f"The word {word} has {len(word)} letters.",
        f"The word {longer} is longer than the word {shorter}." if len(longer) > len(shorter)
        else f"The words {word} and {other} have the same length.",
    ))


WRITERS: tuple[Writer, ...] = (_story, _review, _lexicon, _topic, _listing, _numbers, _spelling)


def corpus_documents(n: int, seed: int = 0, sentences: tuple[int, int] = (3, 8)) -> list[str]:
    """`n` documents of a few sentences each, every sentence from a randomly chosen writer."""
    rng = random.Random(f"corpus:{seed}")
    documents = []
    for _ in range(n):
        count = rng.randint(*sentences)
        documents.append(" ".join(rng.choice(WRITERS)(rng) for _ in range(count)))
    return documents
