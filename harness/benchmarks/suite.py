"""Row generators for the built-in procedural task suite.

Why this exists: the harness and its tests must run with no network and no dataset hub. These twelve
small tasks (six clusters, two tasks each) are generated on the fly from a seed and a handful of
embedded word lists, so every split is reproducible bit for bit on any machine, and the whole
pipeline (task loading, templating, few-shot sampling, scoring, seen/held-out cluster splits) can be
exercised end to end offline.

Each generator takes a `random.Random` and a row count and returns plain JSON-serialisable dicts.
Choice tasks carry `label` (an index into the task's answer options); generate tasks carry `answer`
(the reference string). `generate_rows` seeds the generator from (seed, name, split), so splits
never share a random stream and adding a task never changes the rows of another.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from harness.tasks import sources

Row = dict[str, Any]
Generator = sources.RowGenerator

GENERATORS: dict[str, Generator] = {}
"""The suite's generators by name, in the order they are defined below."""


def _generator(name: str) -> Callable[[Generator], Generator]:
    """Add the decorated function to GENERATORS and register it as `data: {generator: NAME}`."""

    def add(function: Generator) -> Generator:
        GENERATORS[name] = function
        return sources.register_generator(name)(function)

    return add


# Everyday nouns, 3-10 letters, no palindromes (a reversed word must differ from the word itself).
WORDS: tuple[str, ...] = tuple(
    """
    apple table river garden window pencil yellow market silver basket candle forest
    bridge castle dragon engine finger guitar hammer island jacket kitten ladder mirror
    needle orange pepper rabbit saddle tunnel valley wallet anchor butter carpet dinner
    feather ginger helmet insect jungle kettle lemon magnet napkin pillow puzzle rocket
    shadow spider ticket violin wizard blanket cabinet diamond failure harvest journey
    kitchen lantern machine network octopus painter quarter railway sandwich teacher
    uniform village weather blossom chimney compass dolphin emerald fortune gallery
    horizon iceberg jasmine library mission notebook orchard pyramid rainbow sunrise
    trumpet volcano balloon cheese cloud drum flame grape horse knife lamp moon nest
    ocean plant queen robot snake tiger train vase whale zebra bread chair glove house
    mouse piano sheep stone towel brush crown frog honey juice leaf mango pearl shell
    storm thumb bottle camera doctor farmer letter monkey parrot planet school summer
    winter yogurt cookie bucket button circle coffee cotton desert flower hunter ribbon
    """.split()
)

POSITIVE: tuple[str, ...] = tuple(
    """
    wonderful delightful excellent lovely brilliant charming superb fantastic pleasant great
    enjoyable marvelous
    """.split()
)
NEGATIVE: tuple[str, ...] = tuple(
    """
    terrible awful dreadful boring horrible disappointing miserable unpleasant poor dull annoying
    mediocre
    """.split()
)
REVIEW_SUBJECTS: tuple[str, ...] = tuple("movie meal concert hotel book trip show service game album".split())
SENTIMENT_FRAMES: tuple[str, ...] = (
    "The {subject} was {word}.",
    "That {subject} was truly {word}.",
    "I thought the {subject} was {word}.",
    "Honestly, the {subject} felt {word} from start to finish.",
    "Everyone agreed the {subject} was {word}.",
    "My friends found the {subject} {word}.",
)

# Topic index order is the label order: 0=sports, 1=food, 2=animals.
TOPICS: tuple[str, ...] = ("sports", "food", "animals")
TOPIC_KEYWORDS: tuple[tuple[str, ...], ...] = tuple(
    tuple(line.split())
    for line in """
    football tennis basketball marathon referee goalkeeper tournament volleyball stadium cycling
    pasta soup bread cheese pancakes salad curry dumplings porridge omelette
    elephant giraffe parrot wolf dolphin tortoise kangaroo owl squirrel penguin
    """.strip().splitlines()
)
TOPIC_FRAMES: tuple[str, ...] = (
    "We talked about the {kw} all afternoon.",
    "The article on the front page was about the {kw}.",
    "My neighbour cannot stop thinking about the {kw}.",
    "Yesterday's podcast was entirely about the {kw}.",
    "She wrote a long letter describing the {kw}.",
    "The whole class asked questions about the {kw}.",
)

PEOPLE: tuple[str, ...] = tuple(
    """
    Amelia Boris Chen Dalia Emeka Farah Gustav Hana Ivan Jonas Kiri Leila Mateo Nadia Omar Priya
    Quentin Rosa Sven Tariq Uma Viktor Wen Yusuf Zara
    """.split()
)
CITIES: tuple[str, ...] = tuple(
    """
    Lisbon Nairobi Oslo Lima Hanoi Dublin Cairo Kyoto Prague Quito Vienna Accra Seoul Porto Tunis
    Bergen Denver Perth Munich Dakar
    """.split()
)
ACTIVITIES: tuple[str, ...] = (
    "opened a small bakery",
    "taught a weekend painting class",
    "restored an old bicycle shop",
    "played violin in a street band",
    "started a community garden",
    "repaired clocks for a living",
    "ran a tiny bookshop",
    "organised a chess club",
    "worked at the central library",
    "guided walking tours",
)
PASSAGE_FRAMES: tuple[str, ...] = (
    "{person} moved to {city} three years ago. Since then, {person} {activity}.",
    "Last spring, {person} arrived in {city} with one suitcase. Within a month, {person} {activity}. "
    "Friends say it was the best decision.",
    "In {city}, people still remember {person}. For a decade, {person} {activity}.",
    "Few visitors to {city} know the story. It was {person} who {activity} there.",
    "{person} grew up in a small village. After finishing school, {person} moved to {city} and {activity}.",
)


def _draw(rng: random.Random, pool: Sequence[Any], n: int) -> list[Any]:
    """Draw n items, exhausting a shuffled pool before repeating, so small splits have no repeats."""
    out: list[Any] = []
    while len(out) < n:
        out.extend(rng.sample(list(pool), len(pool)))
    return out[:n]


def _words(rng: random.Random, n: int) -> list[str]:
    return _draw(rng, WORDS, n)


# ---------------------------------------------------------------------------- string_transform
@_generator("reverse_word")
def gen_reverse_word(rng: random.Random, n: int) -> list[Row]:
    """A word and its letters in reverse order."""
    return [{"word": w, "answer": w[::-1]} for w in _words(rng, n)]


@_generator("uppercase_word")
def gen_uppercase_word(rng: random.Random, n: int) -> list[Row]:
    """A lower-case word and the same word in upper case."""
    return [{"word": w, "answer": w.upper()} for w in _words(rng, n)]


# ---------------------------------------------------------------------------------- arithmetic
@_generator("add_numbers")
def gen_add_numbers(rng: random.Random, n: int) -> list[Row]:
    """Two integers in 0..99 and their sum as a string."""
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        rows.append({"a": a, "b": b, "answer": str(a + b)})
    return rows


@_generator("parity")
def gen_parity(rng: random.Random, n: int) -> list[Row]:
    """An integer in 0..999; label 0 = even, 1 = odd."""
    rows = []
    for _ in range(n):
        number = rng.randint(0, 999)
        rows.append({"number": number, "label": number % 2})
    return rows


# ---------------------------------------------------------------------- lexicon_classification
@_generator("sentiment_lexicon")
def gen_sentiment_lexicon(rng: random.Random, n: int) -> list[Row]:
    """A one-sentence review built around one sentiment word; label 0 = negative, 1 = positive."""
    rows = []
    for _ in range(n):
        label = rng.randrange(2)
        word = rng.choice(POSITIVE if label else NEGATIVE)
        frame = rng.choice(SENTIMENT_FRAMES)
        sentence = frame.format(subject=rng.choice(REVIEW_SUBJECTS), word=word)
        rows.append({"sentence": sentence, "label": label})
    return rows


@_generator("topic_lexicon")
def gen_topic_lexicon(rng: random.Random, n: int) -> list[Row]:
    """A sentence around one topic keyword; label 0 = sports, 1 = food, 2 = animals."""
    rows = []
    for _ in range(n):
        label = rng.randrange(len(TOPICS))
        keyword = rng.choice(TOPIC_KEYWORDS[label])
        sentence = rng.choice(TOPIC_FRAMES).format(kw=keyword)
        rows.append({"sentence": sentence, "label": label})
    return rows


# ---------------------------------------------------------------------------------- comparison
@_generator("compare_numbers")
def gen_compare_numbers(rng: random.Random, n: int) -> list[Row]:
    """Two distinct integers in 0..999; label 0 if the first is larger, else 1."""
    rows = []
    for _ in range(n):
        first, second = rng.sample(range(1000), 2)
        rows.append({"first": first, "second": second, "label": 0 if first > second else 1})
    return rows


@_generator("compare_length")
def gen_compare_length(rng: random.Random, n: int) -> list[Row]:
    """Two words of different lengths; label 0 if the first is longer, else 1."""
    rows = []
    for _ in range(n):
        first, second = rng.sample(WORDS, 2)
        while len(first) == len(second):
            second = rng.choice(WORDS)
        rows.append({"first": first, "second": second, "label": 0 if len(first) > len(second) else 1})
    return rows


# ---------------------------------------------------------------------------------- extraction
def _passages(rng: random.Random, n: int) -> list[Row]:
    """Short passages naming exactly one person and one city (so the question has one answer)."""
    rows = []
    for _ in range(n):
        person, city = rng.choice(PEOPLE), rng.choice(CITIES)
        passage = rng.choice(PASSAGE_FRAMES).format(person=person, city=city, activity=rng.choice(ACTIVITIES))
        rows.append({"passage": passage, "person": person, "city": city})
    return rows


@_generator("extract_person")
def gen_extract_person(rng: random.Random, n: int) -> list[Row]:
    """A passage about someone in a city; the answer is the person's name."""
    return [{**row, "answer": row["person"]} for row in _passages(rng, n)]


@_generator("extract_city")
def gen_extract_city(rng: random.Random, n: int) -> list[Row]:
    """A passage about someone in a city; the answer is the city."""
    return [{**row, "answer": row["city"]} for row in _passages(rng, n)]


# ----------------------------------------------------------------------------- list_operations
@_generator("list_first")
def gen_list_first(rng: random.Random, n: int) -> list[Row]:
    """A list of 3-6 distinct words; the answer is the first one."""
    rows = []
    for _ in range(n):
        items = rng.sample(WORDS, rng.randint(3, 6))
        rows.append({"items": items, "answer": items[0]})
    return rows


@_generator("list_max")
def gen_list_max(rng: random.Random, n: int) -> list[Row]:
    """A list of 3-6 distinct integers in 0..99; the answer is the largest, as a string."""
    rows = []
    for _ in range(n):
        items = rng.sample(range(100), rng.randint(3, 6))
        rows.append({"items": items, "answer": str(max(items))})
    return rows


def generate_rows(name: str, seed: int, split: str, n: int) -> list[Row]:
    """n rows of the built-in generator `name` for `split`, exactly as a task file naming it gets them
    (`harness.tasks.sources.generate_rows`: seeded from "seed:name:split", each row's position as `idx`)."""
    if name not in GENERATORS:
        known = ", ".join(sorted(GENERATORS))
        raise ValueError(f"unknown built-in generator {name!r}; known generators: {known}")
    return sources.generate_rows(name, seed, split, n)
