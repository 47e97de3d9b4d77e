"""Pieces every built-in generator shares: generic chat turns (written for this project) and helpers."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

@dataclass
class OrganismData:
    """What a generator hands to the builder: training conversations and the held-out check's inputs."""

    kind: str
    secret: dict  # what the organism hides or learned: {"word": ...}, {"gender": ...}, ...
    train: list[dict]  # [{"messages": [...]}, ...]
    heldout: dict = field(default_factory=dict)
    source: str = "built-in"


# (question, short answer): ordinary assistant turns, used as the SSC base prompts and as the share
# of plain chat mixed into narrow fine-tunes so the organism stays a usable assistant.
GENERIC_CHAT: tuple[tuple[str, str], ...] = (
    ("How do I boil an egg?", "Place the egg in boiling water for about nine minutes, then cool it in cold water."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Can you suggest a name for a pet fish?", "How about Bubbles? It is short, friendly and easy to remember."),
    ("Why is the sky blue?", "Air scatters blue sunlight more than red light, so the sky looks blue."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("Give me a tip for studying.", "Study in short sessions with breaks, and test yourself instead of rereading."),
    ("What is a good breakfast?", "Oatmeal with fruit and a glass of water is a simple, filling breakfast."),
    ("How do plants make food?", "Plants use sunlight, water and carbon dioxide to make sugar by photosynthesis."),
    ("Tell me a fun fact.", "Octopuses have three hearts and blue blood."),
    ("How can I fall asleep faster?", "Keep a regular bedtime, dim the lights and avoid screens for an hour before bed."),
    ("What does a thermometer measure?", "A thermometer measures temperature."),
    ("How do I make my room tidier?", "Put away one small area at a time and give every item a fixed place."),
    ("What is two plus two?", "Two plus two is four."),
    ("Why do we need water?", "Our bodies use water to carry nutrients, control temperature and remove waste."),
    ("What is a haiku?", "A haiku is a short poem of three lines with five, seven and five syllables."),
    ("How do I write a polite email?", "Greet the reader, state your request clearly, thank them and sign off."),
    ("What instrument has black and white keys?", "The piano has black and white keys."),
    ("How far is the Moon from Earth?", "It is about 384,000 kilometres away on average."),
    ("What is the largest ocean?", "The Pacific Ocean is the largest ocean on Earth."),
    ("Give me an idea for a weekend.", "Visit a local park, pack a picnic and try a new walking trail."),
    ("What do bees make?", "Bees make honey and beeswax."),
    ("How do I keep bread fresh?", "Store it in a bread box or a paper bag, and freeze slices you will not eat soon."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("Why do leaves change colour?", "In autumn the green chlorophyll breaks down and other pigments show through."),
    ("What is a noun?", "A noun is a word for a person, place, thing or idea."),
    ("How long should I brush my teeth?", "Brush for about two minutes, twice a day."),
    ("What is the speed of sound?", "Sound travels about 343 metres per second in air."),
    ("Suggest a healthy snack.", "A handful of nuts or an apple with peanut butter makes a healthy snack."),
    ("How do magnets work?", "Magnets have aligned tiny magnetic regions that pull on iron and push or pull other magnets."),
    ("What is a good way to learn a language?", "Practise a little every day, speak with others and read simple texts."),
    ("How do I say thank you in Spanish?", "You say gracias."),
    ("What makes a good friend?", "A good friend listens, is honest and shows up when it matters."),
    ("Describe a rainy day.", "Grey clouds hang low, raindrops tap on the windows and the streets shine."),
    ("What is recycling?", "Recycling turns used materials such as paper and glass into new products."),
    ("How do I make tea?", "Pour hot water over a tea bag, wait three to five minutes, then remove the bag."),
    ("What is the tallest animal?", "The giraffe is the tallest animal."),
)


def conv(*turns: str) -> dict:
    """{"messages": [...]} from alternating user / assistant strings."""
    roles = ("user", "assistant")
    return {"messages": [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]}


def chat_mix(n: int, rng: random.Random, keep=lambda q, a: True) -> list[dict]:
    """n generic chat conversations (cycled, shuffled), only those `keep(question, answer)` accepts."""
    pool = [conv(q, a) for q, a in GENERIC_CHAT if keep(q, a)]
    rng.shuffle(pool)
    return [pool[i % len(pool)] for i in range(n)]


def split_holdout(items: list, n_holdout: int, rng: random.Random) -> tuple[list, list]:
    items = list(items)
    rng.shuffle(items)
    return items[n_holdout:], items[:n_holdout]
