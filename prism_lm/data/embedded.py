"""The embedded corpus: seeded TinyStories-style stories with ground-truth long-range dependencies.

Nothing here is downloaded or copied: every story is assembled from small word lists and sentence
templates written for this project. Story ``i`` of seed ``s`` is always the same text.

Each story introduces entities early and recalls them later across a distractor passage whose
length is drawn per story, so antecedent-to-recall distances spread from a few to a few hundred
tokens. Distractor sentences use pronouns, never the recalled words, so the recall's antecedent
is unambiguous: every annotated word occurs exactly twice in its story, in any case (tested over
thousands of stories). Dependency kinds:
- ``object``: "found a shiny key in the park" ... "picked up the shiny key" (adjective and noun);
- ``name``: the hero's name at the start, recalled at the end; ``pet``: a pet's name and species;
- ``cause``: "It began to rain." ... "Because of the rain, ..." (cause early, consequence late).
Local syntax is learnable: pronoun and verb agreement, fixed phrases ("Once upon a time",
"The end."). Variety: about 10^12 distinct skeletons before distractors, so a small model cannot
memorise the corpus in minutes.

Annotations are character spans; ``prism_lm.data.shards`` turns them into token offsets.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

KINDS = ("object", "name", "pet", "cause")

GIRLS = ("Lily", "Mia", "Sue", "Anna", "Lucy", "Emma", "Zoe", "Ella", "Rosa", "Kim", "Amy", "Jane", "Ruby",
         "Nina", "Sara", "Tina", "Molly", "Daisy", "Grace", "Ivy", "Hannah", "Chloe", "Maya", "Lola", "Poppy")
BOYS = ("Tom", "Ben", "Sam", "Max", "Leo", "Jack", "Tim", "Joe", "Dan", "Finn", "Noah", "Luke", "Owen", "Jake",
        "Paul", "Theo", "Eli", "Hugo", "Ryan", "Adam", "Oscar", "Liam", "Carl", "Ned", "Bob")
PETS = ("dog", "cat", "frog", "bunny", "bird", "fish", "duck", "mouse", "turtle", "pony", "puppy", "kitten")
PET_NAMES = ("Spot", "Fluffy", "Max", "Buddy", "Coco", "Pip", "Bella", "Sunny", "Ziggy", "Peanut", "Muffin",
             "Bubbles", "Rocky", "Daisy", "Toby", "Lulu", "Biscuit", "Pepper", "Snowy", "Oreo", "Ginger",
             "Patch", "Button", "Cookie", "Shadow", "Whiskers", "Honey", "Noodle", "Pickles", "Bean")
OBJECTS = ("key", "ball", "kite", "hat", "box", "shell", "coin", "map", "cup", "spoon", "bell", "rock", "feather",
           "ring", "book", "crayon", "button", "leaf", "stick", "drum", "boat", "car", "doll", "star")
ADJECTIVES = ("shiny", "red", "blue", "small", "big", "soft", "old", "green", "yellow", "tiny", "pretty", "round",
              "gold", "pink", "purple", "funny", "smooth", "bright")
PLACES = ("park", "forest", "garden", "yard", "beach", "field", "barn", "kitchen", "attic", "river", "meadow",
          "school", "house", "sand", "grass", "woods", "hill", "pond")
FRIENDS = ("a bird", "a squirrel", "an old man", "a little girl", "a boy from school", "a kind lady",
           "a big bear", "a rabbit", "a duck", "a farmer", "a bee", "a ladybug")
FOODS = ("an apple", "some bread", "a cookie", "some soup", "a banana", "some cheese", "a sandwich", "some cake")
TOYS = ("blocks", "a puzzle", "a truck", "a yo-yo", "a top", "a train", "bubbles", "chalk")
COLORS_SKY = ("blue", "gray", "bright", "clear", "pink", "orange")
FEELINGS = ("happy", "sad", "tired", "excited", "scared", "proud", "curious", "sleepy", "brave", "calm")
# cause sentence, cause word, consequence (said after "Because of the <word>,")
CAUSES = (
    ("It began to rain.", "rain", "the ground was wet and muddy."),
    ("{Sub} planted a little seed.", "seed", "there was now a tall flower."),
    ("{Sub} ate too much cake.", "cake", "{obj} tummy hurt a lot."),
    ("A strong wind blew.", "wind", "the old fence fell down."),
    ("The snow fell all night.", "snow", "everything was white and cold."),
    ("{Sub} spilled the milk.", "milk", "the floor was sticky."),
    ("The sun was very hot.", "sun", "the ice cream melted fast."),
    ("{Sub} lost {pos} shoe.", "shoe", "{sub} had to walk slowly."),
    ("A big storm came.", "storm", "the lights went out."),
    ("{Sub} forgot to close the gate.", "gate", "the sheep ran away."),
)
FILLER = (
    "The sky was {sky} and the air was warm.",
    "{Sub} saw {friend} near a tree.",
    "{Sub} said hello to {friend}.",
    "{Sub} ate {food} for lunch.",
    "{Sub} played with {toy} for a while.",
    "{Sub} felt {feeling}.",
    "A bird sang a song in the tree.",
    "{Sub} ran around and laughed.",
    "Then {sub} sat down to rest.",
    "{Sub} sang a little song.",
    "{Sub} looked at the clouds in the {sky} sky.",
    "{Sub} jumped over a puddle.",
    "Mom called, and {sub} said, \"I am coming!\"",
    "{Sub} gave {friend} a big hug.",
    "\"This is fun!\" {sub} said.",
    "{Sub} counted to ten and smiled.",
    "{Sub} drew a picture of {friend}.",
    "They played a game together.",
    "{Sub} was {feeling} and wanted to play more.",
    "{Sub} walked to the other side of the {place}.",
)

VERBS = ("was", "had", "found", "picked", "came", "went", "saw", "said", "ate", "played", "felt", "ran", "sat",
         "sang", "looked", "jumped", "gave", "counted", "drew", "walked", "wanted", "laughed", "smiled", "called",
         "planted", "spilled", "lost", "forgot", "began", "blew", "fell", "melted", "hurt", "named", "rest", "play",
         "walk", "close", "coming", "running")
# the word classes the head-diversity measure sorts keys into (every other token is "other")
WORD_CLASSES = {
    "name": frozenset(GIRLS + BOYS + PET_NAMES),
    "noun": frozenset(OBJECTS + PETS + PLACES + tuple(word for _, word, _ in CAUSES)),
    "determiner": frozenset(("a", "an", "the", "some", "his", "her")),
    "verb": frozenset(VERBS),
    "pronoun": frozenset(("he", "she", "they", "it", "i")),
    "punctuation": frozenset((".", ",", "!", "?", '"', '."', '!"', '?"', ',"')),
}


def word_class(token_text: str) -> str:
    """The class of one token's text (spaces stripped; names as written, other words lower-cased)."""
    word = token_text.strip()
    for name, words in WORD_CLASSES.items():
        if word in words or (name != "name" and word.lower() in words):
            return name
    return "other"


@dataclass(frozen=True)
class Dependency:
    """Characters [recall_start, recall_end) repeat the entity introduced at [ante_start, ante_end)."""

    kind: str
    recall_start: int
    recall_end: int
    ante_start: int
    ante_end: int


@dataclass(frozen=True)
class Story:
    text: str
    dependencies: tuple[Dependency, ...]


def _find_word(sentence: str, word: str) -> int:
    return re.search(rf"\b{re.escape(word)}\b", sentence).start()


class _Writer:
    """Accumulates sentences and records character spans of marked words."""

    def __init__(self):
        self.parts: list[str] = []
        self.length = 0
        self.spans: dict[str, tuple[int, int]] = {}
        self.deps: list[Dependency] = []

    def say(self, sentence: str, marks: dict[str, str] | None = None, recalls: dict[str, str] | None = None):
        """Append a sentence. ``marks``: tag -> word introduced here; ``recalls``: tag -> kind recalled here."""
        start = self.length + (1 if self.parts else 0)
        for tag, word in (marks or {}).items():
            at = _find_word(sentence, word)
            self.spans[tag] = (start + at, start + at + len(word))
        for tag, kind in (recalls or {}).items():
            a, b = self.spans[tag]
            word = self._text_at(a, b)
            at = _find_word(sentence, word)
            self.deps.append(Dependency(kind, start + at, start + at + len(word), a, b))
        self.parts.append(sentence)
        self.length = start + len(sentence)

    def _text_at(self, a: int, b: int) -> str:
        return " ".join(self.parts)[a:b]

    def story(self) -> Story:
        return Story(" ".join(self.parts), tuple(sorted(self.deps, key=lambda d: d.recall_start)))


def _filler(rng: random.Random, n: int, pron: dict[str, str], avoid: set[str]) -> list[str]:
    out = []
    while len(out) < n:
        s = rng.choice(FILLER).format(sky=rng.choice(COLORS_SKY), friend=rng.choice(FRIENDS), food=rng.choice(FOODS),
                                      toy=rng.choice(TOYS), feeling=rng.choice(FEELINGS), place=rng.choice(PLACES),
                                      **pron)
        if not _mentions(s, avoid):
            out.append(s)
    return out


def _mentions(text: str, words: set[str]) -> bool:
    """Does ``text`` hold any of ``words`` as a whole word, in any case?"""
    return any(re.search(rf"\b{re.escape(word)}\b", text, re.IGNORECASE) for word in words)


def generate_story(index: int, seed: int = 0) -> Story:
    """Story number ``index`` of the corpus with ``seed``: deterministic, independent of other stories."""
    rng = random.Random(seed * 1_000_003 + index)
    girl = rng.random() < 0.5
    name = rng.choice(GIRLS if girl else BOYS)
    pron = {"Sub": "She" if girl else "He", "sub": "she" if girl else "he",
            "obj": "her" if girl else "his", "pos": "her" if girl else "his"}
    pet, pet_name = rng.choice(PETS), rng.choice([p for p in PET_NAMES if p != name])
    adj = rng.choice(ADJECTIVES)
    thing = rng.choice([o for o in OBJECTS if o != pet_name.lower()])  # a pet "Button", a "button"
    place = rng.choice(PLACES)
    entities = {name, pet, pet_name, adj, thing}
    cause_sentence, cause_word, consequence = rng.choice(CAUSES)
    while _mentions(f"{cause_sentence} {consequence}", entities):  # e.g. "the old fence" beside an "old" key
        cause_sentence, cause_word, consequence = rng.choice(CAUSES)
    avoid = entities | {cause_word}
    # how much distraction separates introductions from recalls: mostly short, sometimes long
    budget = rng.choice((0, 1, 2, 3, 5, 8, 12, 18, 25, 32))

    w = _Writer()
    age = rng.choice([a for a in ("little", "young", "happy", "kind", "small") if a != adj])
    w.say(f"Once upon a time, there was a {age} {'girl' if girl else 'boy'} named {name}.", marks={"name": name})
    intros = ["pet", "object", "cause"]
    rng.shuffle(intros)
    for intro in intros:
        if intro == "pet":
            w.say(f"{pron['Sub']} had a pet {pet} named {pet_name}.", marks={"pet": pet, "pet_name": pet_name})
        elif intro == "object":
            w.say(f"One day, {pron['sub']} found a {adj} {thing} in the {place}.", marks={"adj": adj, "thing": thing})
        else:
            w.say(cause_sentence.format(Sub=pron["Sub"], pos=pron["pos"]), marks={"cause": cause_word})
        for s in _filler(rng, rng.randint(0, max(0, budget // 4)), pron, avoid):
            w.say(s)
    recalls = ["object", "pet", "cause"]
    rng.shuffle(recalls)
    for recall in recalls:
        for s in _filler(rng, rng.randint(0, budget), pron, avoid):
            w.say(s)
        if recall == "object":
            w.say(f"{pron['Sub']} picked up the {adj} {thing} again.",
                  recalls={"adj": "object", "thing": "object"})
        elif recall == "pet":
            w.say(f"{pet_name} the {pet} came running.", recalls={"pet_name": "pet", "pet": "pet"})
        else:
            w.say(f"Because of the {cause_word}, {consequence.format(obj=pron['obj'], sub=pron['sub'])}",
                  recalls={"cause": "cause"})
    w.say(f"At the end of the day, {name} went home.", recalls={"name": "name"})
    w.say(rng.choice(("The end.", f"{pron['Sub']} was very {rng.choice(FEELINGS)}.", "It was a good day.")))
    return w.story()

