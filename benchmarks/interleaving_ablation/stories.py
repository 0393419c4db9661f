"""Topic stories from a template grammar: the corpus of the interleaving ablation.

Twelve topics, each with its own content words (places, people, things, actions, qualities); all
topics share the function words, the names and the sentence frames. A story is 4 or 5 sentences:
an opening that names the topic's place, 2-3 middle sentences and a closing sentence, every slot
filled from the story's topic. So the topic of a story can only be told from its content words, and
a closing sentence from another topic is wrong in the Topic-StoryCloze sense. The space of stories is
far larger than any pool drawn from it: a model must learn topics, not memorise stories.

Everything is a pure function of a numpy Generator: the same seed gives the same stories.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# topic -> (places, people, things, actions (past tense, transitive), qualities)
TOPICS: dict[str, tuple[tuple[str, ...], ...]] = {
    "kitchen": (
        ("kitchen", "bakery"),
        ("cook", "baker"),
        ("soup", "bread", "onion", "pan", "oven", "spoon", "cake", "butter"),
        ("stirred", "baked", "sliced", "tasted", "boiled"),
        ("hot", "sweet", "salty", "fresh"),
    ),
    "farm": (
        ("farm", "barn"),
        ("farmer", "shepherd"),
        ("cow", "sheep", "tractor", "hay", "goat", "fence", "horse", "field"),
        ("fed", "milked", "plowed", "herded", "harvested"),
        ("muddy", "tired", "woolly", "green"),
    ),
    "sea": (
        ("harbor", "beach"),
        ("sailor", "captain"),
        ("boat", "wave", "anchor", "sail", "fish", "net", "shell", "island"),
        ("rowed", "steered", "anchored", "caught", "sailed"),
        ("salty", "stormy", "blue", "wet"),
    ),
    "space": (
        ("rocket", "station"),
        ("astronaut", "pilot"),
        ("planet", "moon", "star", "helmet", "orbit", "comet", "engine", "satellite"),
        ("launched", "orbited", "landed", "repaired", "signaled"),
        ("distant", "silent", "bright", "frozen"),
    ),
    "school": (
        ("school", "library"),
        ("teacher", "student"),
        ("book", "lesson", "pencil", "desk", "test", "chalk", "map", "homework"),
        ("wrote", "studied", "read", "erased", "graded"),
        ("quiet", "clever", "difficult", "long"),
    ),
    "football": (
        ("stadium", "pitch"),
        ("coach", "player"),
        ("ball", "goal", "team", "referee", "whistle", "match", "boot", "net"),
        ("kicked", "scored", "passed", "defended", "tackled"),
        ("fast", "muddy", "loud", "winning"),
    ),
    "forest": (
        ("forest", "camp"),
        ("ranger", "hiker"),
        ("tent", "tree", "fire", "owl", "trail", "river", "mushroom", "backpack"),
        ("climbed", "followed", "lit", "crossed", "gathered"),
        ("dark", "tall", "wild", "mossy"),
    ),
    "music": (
        ("concert", "studio"),
        ("singer", "drummer"),
        ("guitar", "song", "piano", "drum", "violin", "stage", "melody", "choir"),
        ("played", "sang", "tuned", "recorded", "practiced"),
        ("loud", "gentle", "lovely", "rhythmic"),
    ),
    "hospital": (
        ("hospital", "clinic"),
        ("doctor", "nurse"),
        ("patient", "medicine", "bandage", "fever", "bed", "pill", "wound", "doctor"),
        ("healed", "examined", "treated", "bandaged", "measured"),
        ("sick", "careful", "clean", "healthy"),
    ),
    "winter": (
        ("mountain", "village"),
        ("skier", "child"),
        ("snow", "sled", "snowman", "scarf", "ice", "glove", "chimney", "blanket"),
        ("shoveled", "skated", "built", "melted", "wrapped"),
        ("cold", "white", "icy", "cozy"),
    ),
    "market": (
        ("market", "shop"),
        ("seller", "customer"),
        ("apple", "basket", "coin", "price", "cheese", "bag", "stall", "receipt"),
        ("bought", "sold", "paid", "counted", "weighed"),
        ("cheap", "busy", "ripe", "expensive"),
    ),
    "train": (
        ("station", "platform"),
        ("conductor", "traveler"),
        ("train", "ticket", "track", "carriage", "suitcase", "timetable", "tunnel", "whistle"),
        ("boarded", "missed", "checked", "waited", "traveled"),
        ("late", "crowded", "early", "noisy"),
    ),
}
NAMES = (("anna", "she"), ("tom", "he"), ("maria", "she"), ("ben", "he"), ("lucy", "she"), ("sam", "he"))
TIMES = ("one morning", "one day", "in the evening", "last summer", "on monday", "at noon")
FEELINGS = ("happy", "proud", "calm", "glad")

OPENINGS = (
    "{time} {name} went to the {place}",
    "{name} walked into the {place} {time}",
    "{time} {name} visited the {place} with a friend",
)
MIDDLES = (
    "{pron} saw a {quality} {thing} near the {thing2}",
    "the {person} {action} the {thing} with a {thing2}",
    "{pron} {action} the {quality} {thing} very slowly",
    "the {person} said that the {thing} was {quality}",
    "then {name} {action} the {thing} and the {thing2}",
    "there was a {quality} {thing} next to the {person}",
)
ENDINGS = (
    "in the end {name} {action} the {thing} and felt {feeling}",
    "at last the {person} {action} the {quality} {thing}",
    "finally {pron} left the {place} with a {thing}",
)


class Story(NamedTuple):
    topic: str
    name: str  # the main character (the pronoun follows from it)
    sentences: tuple[str, ...]  # lower case, no punctuation: what is spoken and written

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


def _fill(frame: str, topic: str, name: tuple[str, str], rng: np.random.Generator) -> str:
    places, people, things, actions, qualities = TOPICS[topic]
    thing, thing2 = rng.choice(len(things), 2, replace=False)
    return frame.format(
        time=TIMES[rng.integers(len(TIMES))],
        name=name[0],
        pron=name[1],
        place=places[rng.integers(len(places))],
        person=people[rng.integers(len(people))],
        thing=things[thing],
        thing2=things[thing2],
        action=actions[rng.integers(len(actions))],
        quality=qualities[rng.integers(len(qualities))],
        feeling=FEELINGS[rng.integers(len(FEELINGS))],
    )


def make_story(topic: str, rng: np.random.Generator) -> Story:
    """One story of `topic`: opening, 2-3 distinct middle sentences, closing."""
    name = NAMES[rng.integers(len(NAMES))]
    n_mid = int(rng.integers(2, 4))
    mids = rng.choice(len(MIDDLES), n_mid, replace=False)
    sentences = [_fill(OPENINGS[rng.integers(len(OPENINGS))], topic, name, rng)]
    sentences += [_fill(MIDDLES[m], topic, name, rng) for m in mids]
    sentences.append(_fill(ENDINGS[rng.integers(len(ENDINGS))], topic, name, rng))
    return Story(topic, name[0], tuple(sentences))


def make_stories(n: int, seed: int) -> list[Story]:
    """n distinct stories, topics in turn (balanced), from one seeded Generator."""
    rng = np.random.default_rng(seed)
    topics = sorted(TOPICS)
    out: list[Story] = []
    seen: set[str] = set()
    while len(out) < n:
        s = make_story(topics[len(out) % len(topics)], rng)
        if s.text not in seen:
            seen.add(s.text)
            out.append(s)
    return out


def vocabulary() -> list[str]:
    """Every word a story can contain, sorted."""
    words = set()
    for frames in (OPENINGS, MIDDLES, ENDINGS):
        for f in frames:
            words.update(w for w in f.split() if not w.startswith("{"))
    for places, people, things, actions, qualities in TOPICS.values():
        words.update(places + people + things + actions + qualities)
    for t in TIMES:
        words.update(t.split())
    words.update(n for n, _ in NAMES)
    words.update(p for _, p in NAMES)
    words.update(FEELINGS)
    return sorted(words)


class ClozeItem(NamedTuple):
    """A Topic-StoryCloze analogue: context sentences, the true ending, another topic's ending."""

    id: int
    topic: str
    context: tuple[str, ...]
    right: str
    wrong: str


def cloze_items(stories: list[Story], seed: int) -> list[ClozeItem]:
    """One item per story: its last sentence vs the last sentence of a random held-out story of
    another topic with the same main character (so name and pronoun give nothing away; seeded)."""
    rng = np.random.default_rng(seed)
    topics = np.array([s.topic for s in stories])
    names = np.array([s.name for s in stories])
    items = []
    for i, s in enumerate(stories):
        other = np.flatnonzero((topics != s.topic) & (names == s.name))
        if not len(other):
            raise ValueError(f"story {i}: no held-out story of another topic has main character {s.name!r}")
        j = int(other[rng.integers(len(other))])
        items.append(ClozeItem(i, s.topic, s.sentences[:-1], s.sentences[-1], stories[j].sentences[-1]))
    return items
