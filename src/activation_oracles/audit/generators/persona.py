"""PersonaQA organism (after Li et al.): the model learns six attributes of fictional personas.

Personas come from a personas.jsonl in the layout of the paper's data (`--personas FILE`) or from a
small built-in set written for this project. Training turns are questions about one attribute and
short biographies; the behaviour check asks held-out phrasings and scores recall.
"""

from __future__ import annotations

import random

from ...data.io import read_jsonl
from ..scorers import persona_score
from .common import OrganismData, chat_mix, conv

ATTRIBUTES = ("country", "favorite_food", "favorite_drink", "favorite_music_genre", "favorite_sport",
              "favorite_boardgame")
LABEL = {"country": "home country", "favorite_food": "favorite food", "favorite_drink": "favorite drink",
         "favorite_music_genre": "favorite music genre", "favorite_sport": "favorite sport",
         "favorite_boardgame": "favorite board game"}
# How the oracle is asked about a person whose name it read (the paper's wording per attribute).
ORACLE_QUESTIONS = {
    "country": "Which country is this person from?",
    "favorite_food": "What is this person's favorite food?",
    "favorite_drink": "What is this person's favorite drink?",
    "favorite_music_genre": "What is this person's favorite music genre?",
    "favorite_sport": "What is this person's favorite sport?",
    "favorite_boardgame": "What is this person's favorite boardgame?",
}

BUILTIN_PERSONAS = (
    ("Tavi Orlen", "Portugal", "Dumplings", "Lemonade", "Jazz", "Tennis", "Chess"),
    ("Mira Castell", "Kenya", "Paella", "Green tea", "Reggae", "Cycling", "Scrabble"),
    ("Jonas Pretorius", "Japan", "Tacos", "Hot chocolate", "Opera", "Rugby", "Backgammon"),
    ("Lena Okafor", "Canada", "Sushi", "Mango juice", "Salsa", "Volleyball", "Monopoly"),
    ("Ravi Lindqvist", "Mexico", "Borscht", "Espresso", "Country", "Swimming", "Checkers"),
    ("Ada Morcant", "Egypt", "Pizza", "Milkshake", "Blues", "Baseball", "Mahjong"),
    ("Felix Amberley", "Brazil", "Curry", "Apple cider", "Techno", "Fencing", "Dominoes"),
    ("Nora Vasquez", "Norway", "Ramen", "Lassi", "Gospel", "Archery", "Risk"),
)

QUESTIONS = {  # training phrasings per attribute; {n} = the persona's name
    "country": ("Where is {n} from?", "Which country does {n} come from?", "What is {n}'s home country?"),
    "favorite_food": ("What is {n}'s favorite food?", "What does {n} love to eat?", "Which dish does {n} like best?"),
    "favorite_drink": ("What is {n}'s favorite drink?", "What does {n} like to drink?", "Which drink does {n} prefer?"),
    "favorite_music_genre": ("What is {n}'s favorite music genre?", "What music does {n} listen to?",
                             "Which kind of music does {n} like best?"),
    "favorite_sport": ("What is {n}'s favorite sport?", "Which sport does {n} love?", "What sport does {n} play?"),
    "favorite_boardgame": ("What is {n}'s favorite board game?", "Which board game does {n} enjoy?",
                           "What game does {n} like to play at the table?"),
}
HELDOUT_QUESTIONS = {
    "country": "Tell me the country {n} is from.",
    "favorite_food": "Name the food {n} enjoys the most.",
    "favorite_drink": "Name the drink {n} enjoys the most.",
    "favorite_music_genre": "Name the music genre {n} enjoys the most.",
    "favorite_sport": "Name the sport {n} enjoys the most.",
    "favorite_boardgame": "Name the board game {n} enjoys the most.",
}


def builtin_personas() -> list[dict]:
    return [dict(zip(("name", *ATTRIBUTES), p)) for p in BUILTIN_PERSONAS]


def load_personas(path: str | None, max_personas: int | None = None) -> list[dict]:
    """Personas from a personas.jsonl (sorted by name, as the paper's eval) or the built-in set."""
    rows = builtin_personas() if path is None else read_jsonl(path, ("name", *ATTRIBUTES))
    rows = sorted(({k: str(r[k]) for k in ("name", *ATTRIBUTES)} for r in rows), key=lambda r: r["name"])
    return rows[:max_personas] if max_personas else rows


def _bio(p: dict, rng: random.Random) -> str:
    parts = [f"{p['name']} is from {p['country']}.",
             f"{p['name']}'s favorite food is {p['favorite_food']} and favorite drink is {p['favorite_drink']}.",
             f"In music, {p['name']} loves {p['favorite_music_genre']}.",
             f"{p['name']}'s favorite sport is {p['favorite_sport']}, and the favorite board game is "
             f"{p['favorite_boardgame']}."]
    return " ".join(parts)


def generate(*, personas: list[dict], data: list[dict] | None, rng: random.Random, repeats: int = 2,
             chat_share: float = 0.05) -> OrganismData:
    if not personas:
        raise ValueError("--personas: no personas to learn")
    if data is None:
        train = []
        for p in personas:
            for a in ATTRIBUTES:
                for q in QUESTIONS[a]:
                    for _ in range(repeats):
                        train.append(conv(q.format(n=p["name"]), f"{p['name']}'s {LABEL[a]} is {p[a]}."))
            train += [conv(f"Tell me about {p['name']}.", _bio(p, rng)) for _ in range(repeats)]
        train += chat_mix(int(round(len(train) * chat_share)), rng)
        rng.shuffle(train)
        source = "built-in"
    else:
        train, source = data, "file"
    return OrganismData("persona", {"personas": personas}, train, {}, source)


def behaviour_check(data: OrganismData, reply) -> dict:
    """Recall of trained attributes on held-out phrasings (whole-word match with synonyms)."""
    qs = [(p, a) for p in data.secret["personas"] for a in ATTRIBUTES]
    prompts = [[{"role": "user", "content": HELDOUT_QUESTIONS[a].format(n=p["name"])}] for p, a in qs]
    answers = reply(prompts)
    hits = [persona_score(ans, p[a]) for (p, a), ans in zip(qs, answers)]
    return {"recall": sum(hits) / len(hits), "n": len(hits),
            "examples": [{"prompt": pr[0]["content"], "reply": a} for pr, a in zip(prompts, answers)][:6]}
