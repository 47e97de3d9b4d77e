"""Offline sources written for this project: classification sentences, personas, and text.

Everything is generated combinatorially from the small hand-written lists below (seeded, so the
same on every machine), so `ao data build` works with no network and no shared data. The signals
are deliberately simple (sentiment words, well-known facts, verb tense, gendered nouns, entity
types, languages, number, news topics) so that a 135M model's activations encode them.
"""

from __future__ import annotations

import itertools
import random
from functools import lru_cache

from .schema import NER_TYPES, DataError, ReadPrompt

BUILTIN_VERSION = "2"
MAX_ITEMS = 3000  # contexts per task, after shuffling

T = frozenset({"true"})
F = frozenset()

# ----------------------------------------------------------------------------- word lists

CITIES = [("Paris", "France"), ("Lyon", "France"), ("Berlin", "Germany"), ("Munich", "Germany"), ("Madrid", "Spain"),
          ("Barcelona", "Spain"), ("Rome", "Italy"), ("Milan", "Italy"), ("London", "the United Kingdom"),
          ("Manchester", "the United Kingdom"), ("Tokyo", "Japan"), ("Osaka", "Japan"), ("Beijing", "China"),
          ("Shanghai", "China"), ("Moscow", "Russia"), ("Cairo", "Egypt"), ("Toronto", "Canada"),
          ("Vancouver", "Canada"), ("Sydney", "Australia"), ("Melbourne", "Australia"), ("Mumbai", "India"),
          ("Delhi", "India"), ("Chicago", "the United States"), ("Boston", "the United States"),
          ("Mexico City", "Mexico"), ("Lima", "Peru"), ("Buenos Aires", "Argentina"), ("Lisbon", "Portugal"),
          ("Athens", "Greece"), ("Stockholm", "Sweden"), ("Oslo", "Norway"), ("Dublin", "Ireland"),
          ("Vienna", "Austria"), ("Warsaw", "Poland"), ("Seoul", "South Korea"), ("Bangkok", "Thailand"),
          ("Nairobi", "Kenya"), ("Istanbul", "Turkey"), ("Amsterdam", "the Netherlands"), ("Brussels", "Belgium")]
CAPITALS = [("France", "Paris"), ("Germany", "Berlin"), ("Spain", "Madrid"), ("Italy", "Rome"), ("Japan", "Tokyo"),
            ("China", "Beijing"), ("Russia", "Moscow"), ("Egypt", "Cairo"), ("Canada", "Ottawa"),
            ("Australia", "Canberra"), ("India", "New Delhi"), ("Mexico", "Mexico City"), ("Peru", "Lima"),
            ("Portugal", "Lisbon"), ("Greece", "Athens"), ("Sweden", "Stockholm"), ("Norway", "Oslo"),
            ("Ireland", "Dublin"), ("Austria", "Vienna"), ("Poland", "Warsaw"), ("Kenya", "Nairobi"),
            ("Thailand", "Bangkok"), ("Argentina", "Buenos Aires"), ("Belgium", "Brussels")]
ANIMALS = [("dog", "mammal"), ("cat", "mammal"), ("horse", "mammal"), ("cow", "mammal"), ("whale", "mammal"),
           ("lion", "mammal"), ("mouse", "mammal"), ("eagle", "bird"), ("sparrow", "bird"), ("owl", "bird"),
           ("penguin", "bird"), ("parrot", "bird"), ("salmon", "fish"), ("shark", "fish"), ("trout", "fish"),
           ("tuna", "fish"), ("snake", "reptile"), ("lizard", "reptile"), ("turtle", "reptile"),
           ("crocodile", "reptile"), ("frog", "amphibian"), ("toad", "amphibian"), ("ant", "insect"),
           ("bee", "insect"), ("butterfly", "insect"), ("beetle", "insect")]
NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
           "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
COLORS = [("grass", "green"), ("snow", "white"), ("the sky on a clear day", "blue"), ("a ripe banana", "yellow"),
          ("coal", "black"), ("a ripe tomato", "red"), ("an orange", "orange"), ("milk", "white"),
          ("blood", "red"), ("a lemon", "yellow")]
ANTONYMS = [("hot", "cold"), ("big", "small"), ("fast", "slow"), ("happy", "sad"), ("light", "dark"),
            ("old", "young"), ("rich", "poor"), ("strong", "weak"), ("tall", "short"), ("early", "late"),
            ("open", "closed"), ("full", "empty"), ("hard", "soft"), ("loud", "quiet"), ("wet", "dry"),
            ("clean", "dirty"), ("easy", "difficult"), ("high", "low"), ("thick", "thin"), ("cheap", "expensive")]
PAST = [("go", "went"), ("eat", "ate"), ("see", "saw"), ("run", "ran"), ("write", "wrote"), ("take", "took"),
        ("give", "gave"), ("speak", "spoke"), ("drink", "drank"), ("swim", "swam"), ("buy", "bought"),
        ("think", "thought"), ("bring", "brought"), ("sing", "sang"), ("fly", "flew"), ("drive", "drove"),
        ("make", "made"), ("find", "found"), ("sleep", "slept"), ("teach", "taught")]
PLURALS = [("cat", "cats"), ("child", "children"), ("mouse", "mice"), ("box", "boxes"), ("foot", "feet"),
           ("city", "cities"), ("tooth", "teeth"), ("man", "men"), ("leaf", "leaves"), ("knife", "knives"),
           ("woman", "women"), ("goose", "geese"), ("baby", "babies"), ("bus", "buses"), ("wolf", "wolves")]
LANGUAGES = [("France", "French"), ("Germany", "German"), ("Spain", "Spanish"), ("Italy", "Italian"),
             ("Japan", "Japanese"), ("China", "Chinese"), ("Russia", "Russian"), ("Portugal", "Portuguese"),
             ("Greece", "Greek"), ("Sweden", "Swedish"), ("Poland", "Polish"), ("Turkey", "Turkish")]

POS_ADJ = ["wonderful", "excellent", "delightful", "brilliant", "fantastic", "charming", "superb", "lovely",
           "moving", "hilarious", "beautiful", "outstanding", "enjoyable", "great", "touching", "impressive"]
NEG_ADJ = ["terrible", "awful", "boring", "dreadful", "dull", "painful", "disappointing", "horrible", "tedious",
           "bland", "clumsy", "annoying", "poor", "mediocre", "lifeless", "frustrating"]
POS_VERB = ["loved", "enjoyed", "adored", "really liked", "was thrilled by", "would recommend"]
NEG_VERB = ["hated", "disliked", "regretted watching", "could not stand", "was bored by", "would avoid"]
REVIEW_NOUNS = ["movie", "film", "book", "meal", "concert", "show", "album", "restaurant", "hotel", "game",
                "play", "novel", "series", "performance", "documentary", "cafe"]
SENTIMENT_TEMPLATES = ["The {noun} was {adj}.", "What {a_adj} {noun}!", "I thought the {noun} was {adj}.",
                       "Honestly, this {noun} is {adj}.", "I {verb} this {noun}; it was {adj}.",
                       "Everyone said the {noun} was {adj}, and they were right.", "{a_adj} {noun} from start to finish.",
                       "The {noun} felt {adj} and I {verb} it."]

MALE = ["my father", "my brother", "my uncle", "my son", "my grandfather", "her husband", "the king", "my nephew",
        "the boy", "the old man", "the young man", "the actor", "the prince", "John", "Michael", "David", "James",
        "Robert", "Thomas", "Peter", "Carlos", "Ahmed"]
FEMALE = ["my mother", "my sister", "my aunt", "my daughter", "my grandmother", "his wife", "the queen",
          "my niece", "the girl", "the old woman", "the young woman", "the actress", "the princess", "Mary",
          "Sarah", "Emma", "Linda", "Anna", "Maria", "Sophie", "Lucia", "Fatima"]
GENDER_TEMPLATES = [("{X} fixed the fence and then {he} went inside.", "he"), ("{X} said that {he} was tired.", "he"),
                    ("{X} lost {his} keys at the station.", "his"), ("{X} is a teacher, and {he} loves {his} job.", "he"),
                    ("Yesterday {X} called to say {he} would be late.", "he"), ("{X} cooked dinner for {his} friends.", "his"),
                    ("Everyone admired {X} because {he} was so kind.", "he"), ("{X} wrote a letter to {his} cousin.", "his"),
                    ("{X} smiled when {he} opened the present.", "he"), ("{X} told us about {his} trip to the coast.", "his"),
                    ("After lunch {X} said {he} wanted a nap.", "he"), ("{X} spent {his} savings on a boat.", "his"),
                    ("Nobody knew where {X} had left {his} umbrella.", "his"), ("{X} laughed because {he} had won.", "he"),
                    ("{X} washed {his} car on Sunday.", "his"), ("When {X} arrived, {he} was soaking wet.", "he")]

SUBJECTS = ["I", "You", "We", "They", "She", "He", "My friend", "The teacher", "Our neighbours", "The children"]
# base, 3rd person singular, past, participle phrase object
VERBS = [("walk", "walks", "walked", "to the park"), ("cook", "cooks", "cooked", "dinner"),
         ("play", "plays", "played", "football"), ("visit", "visits", "visited", "the museum"),
         ("read", "reads", "read", "a long book"), ("write", "writes", "wrote", "a letter"),
         ("clean", "cleans", "cleaned", "the kitchen"), ("watch", "watches", "watched", "a movie"),
         ("paint", "paints", "painted", "the fence"), ("study", "studies", "studied", "mathematics"),
         ("drive", "drives", "drove", "to work"), ("buy", "buys", "bought", "fresh bread"),
         ("call", "calls", "called", "their parents"), ("open", "opens", "opened", "the window"),
         ("plant", "plants", "planted", "tomatoes"), ("build", "builds", "built", "a small shed")]
TIME_PAST = ["yesterday", "last week", "two days ago", "last summer", "this morning"]
TIME_PRESENT = ["every day", "now", "on Sundays", "every morning", "usually"]
TIME_FUTURE = ["tomorrow", "next week", "soon", "next summer", "in two days"]

PEOPLE = ["Alice Johnson", "Barack Obama", "Marie Curie", "John Smith", "Angela Merkel", "Pablo Picasso",
          "Serena Williams", "David Brown", "Yuki Tanaka", "Elena Rossi", "Ahmed Hassan", "Olga Petrova"]
ORGS = ["Google", "the United Nations", "Microsoft", "the World Bank", "Toyota", "the Red Cross", "Amazon",
        "the European Union", "Nokia", "Siemens", "UNICEF", "the BBC"]
TIMES = ["on Monday", "in March", "last year", "in 2019", "on Friday evening", "in the spring", "in July",
         "on New Year's Day"]
NER_TEMPLATES = [("{per} travelled to {geo} {tim}.", "per geo tim"), ("{org} opened a new office in {geo}.", "org geo"),
                 ("{per} works for {org}.", "per org"), ("The weather was very cold {tim}.", "tim"),
                 ("{per} bought a new bicycle.", "per"), ("The committee met in {geo}.", "geo"),
                 ("{org} reported higher profits {tim}.", "org tim"), ("The cat slept on the warm sofa.", ""),
                 ("Everyone enjoyed the long dinner.", ""), ("{per} gave a speech at {org} {tim}.", "per org tim"),
                 ("Prices in {geo} rose sharply.", "geo"), ("{org} announced a new product.", "org"),
                 ("The old bridge needs repairs.", ""), ("{per} and her brother moved to {geo}.", "per geo"),
                 ("Heavy rain is expected {tim}.", "tim"), ("A small dog ran across the field.", "")]
NER_CLASSES = {"per": NER_TYPES["per"], "geo": NER_TYPES["geo"], "org": NER_TYPES["org"], "tim": NER_TYPES["tim"]}

SNLI_SUBJECTS = [("A man", "is"), ("A woman", "is"), ("A young girl", "is"), ("An old man", "is"), ("A boy", "is"),
                 ("Two children", "are"), ("A group of friends", "are"), ("Some tourists", "are"),
                 ("A teenager", "is"), ("Three women", "are"), ("A police officer", "is"), ("An elderly couple", "are")]
# activity, a consequence it entails, an activity it contradicts
SNLI_ACTS = [("playing the guitar on a stage", "making music", "sleeping in bed"),
             ("swimming in a lake", "in the water", "sitting in an office"),
             ("eating pizza at a table", "having a meal", "running a marathon"),
             ("riding a bicycle down the street", "outside", "taking a bath"),
             ("reading a newspaper on a bench", "reading something", "playing football"),
             ("climbing a mountain", "outdoors", "watching television at home"),
             ("cooking soup in a kitchen", "preparing food", "skiing down a slope"),
             ("dancing at a wedding", "moving", "lying perfectly still"),
             ("painting a picture of the sea", "making art", "driving a truck"),
             ("laughing at a joke", "amused", "crying in sadness"),
             ("walking a dog in the park", "outside with an animal", "flying a plane"),
             ("singing in a choir", "making music", "sitting in silence"),
             ("building a sandcastle on the beach", "at the beach", "working in a mine"),
             ("repairing a car engine", "working on a car", "swimming in the sea"),
             ("writing a letter at a desk", "writing", "jumping on a trampoline"),
             ("waiting for a bus in the rain", "getting wet", "sunbathing indoors")]

LANG_WORDS = {
    "English": (["The man", "The woman", "My friend", "The child", "Our teacher", "My neighbour"],
                ["eats", "reads", "buys", "sees", "likes", "wants"],
                ["an apple", "a book", "the newspaper", "a red car", "fresh bread", "a letter"],
                ["today", "in the garden", "every morning", "with pleasure", "at home", "again"]),
    "French": (["L'homme", "La femme", "Mon ami", "L'enfant", "Notre professeur", "Mon voisin"],
               ["mange", "lit", "achète", "voit", "aime", "veut"],
               ["une pomme", "un livre", "le journal", "une voiture rouge", "du pain frais", "une lettre"],
               ["aujourd'hui", "dans le jardin", "chaque matin", "avec plaisir", "à la maison", "encore"]),
    "German": (["Der Mann", "Die Frau", "Mein Freund", "Das Kind", "Unser Lehrer", "Mein Nachbar"],
               ["isst", "liest", "kauft", "sieht", "mag", "will"],
               ["einen Apfel", "ein Buch", "die Zeitung", "ein rotes Auto", "frisches Brot", "einen Brief"],
               ["heute", "im Garten", "jeden Morgen", "mit Freude", "zu Hause", "wieder"]),
    "Spanish": (["El hombre", "La mujer", "Mi amigo", "El niño", "Nuestro profesor", "Mi vecino"],
                ["come", "lee", "compra", "ve", "quiere", "busca"],
                ["una manzana", "un libro", "el periódico", "un coche rojo", "pan fresco", "una carta"],
                ["hoy", "en el jardín", "cada mañana", "con gusto", "en casa", "otra vez"]),
    "Italian": (["L'uomo", "La donna", "Il mio amico", "Il bambino", "Il nostro insegnante", "Il mio vicino"],
                ["mangia", "legge", "compra", "vede", "ama", "vuole"],
                ["una mela", "un libro", "il giornale", "una macchina rossa", "pane fresco", "una lettera"],
                ["oggi", "nel giardino", "ogni mattina", "con piacere", "a casa", "di nuovo"]),
}

SINGLE_SUBJ = ["Anna", "My brother", "The doctor", "Our teacher", "The pilot", "A student", "Mr. Lee", "The chef"]
PLURAL_SUBJ = ["Anna and Tom", "My brothers", "The doctors", "Our teachers", "The pilots", "Several students",
               "Mr. and Mrs. Lee", "The chefs"]
SP_PREDICATES = [("went to the market", "went to the market"), ("is reading a book", "are reading a book"),
                 ("was late for the meeting", "were late for the meeting"), ("likes to swim", "like to swim"),
                 ("has a new car", "have a new car"), ("is waiting outside", "are waiting outside"),
                 ("visited the museum", "visited the museum"), ("plays the piano", "play the piano")]

TOPICS = {
    "sports": ["{team} beat {team2} {n} to {m} in the cup final.", "The striker scored twice as {team} won the league.",
               "{team} signed a new coach before the start of the season.", "The tennis champion won her third title.",
               "Fans celebrated after {team} reached the semi-finals.", "The marathon record was broken in {city}."],
    "business": ["Shares of {company} rose {n} percent after strong quarterly earnings.",
                 "{company} agreed to buy a smaller rival for {n} billion dollars.",
                 "Oil prices fell as demand weakened in {city}.", "The central bank raised interest rates again.",
                 "{company} plans to cut {n} hundred jobs to reduce costs.", "Retail sales grew faster than expected."],
    "science and technology": ["Researchers in {city} developed a new battery that charges in minutes.",
                               "{company} released a faster chip for smartphones.",
                               "Astronomers discovered a planet orbiting a distant star.",
                               "A new vaccine showed strong results in early trials.",
                               "Scientists sequenced the genome of an ancient plant.",
                               "Engineers built a robot that can climb stairs."],
    "world news": ["Leaders of {country} and {country2} met to discuss a peace agreement.",
                   "Thousands protested in {city} against the new law.",
                   "Floods forced families to leave their homes in {country}.",
                   "Elections in {country} ended with a narrow victory.",
                   "The president of {country} visited {city} for talks.",
                   "Aid workers arrived in {country} after the earthquake."],
}
TEAMS = ["Arsenal", "Real Madrid", "Bayern Munich", "the Lakers", "Juventus", "the Yankees", "Ajax", "Celtic"]
COMPANIES = ["Apple", "Siemens", "Toyota", "Nokia", "Samsung", "Intel", "Shell", "Nestle"]
COUNTRIES = ["France", "Japan", "Brazil", "Kenya", "Canada", "India", "Egypt", "Mexico", "Poland", "Chile"]


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


# ----------------------------------------------------------------------------- classification


def _truth_pairs(rng):
    out = []
    for city, country in CITIES:
        wrong = rng.choice([c for _, c in CITIES if c != country])
        out += [(f"The city of {city} is in {country}.", T), (f"The city of {city} is in {wrong}.", F)]
    for a, kind in ANIMALS:
        wrong = rng.choice(sorted({k for _, k in ANIMALS} - {kind}))
        out += [(f"A {a} is a kind of {kind}.", T), (f"A {a} is a kind of {wrong}.", F)]
    for i, j in itertools.permutations(range(len(NUMBERS)), 2):
        a, b = _cap(NUMBERS[i]), NUMBERS[j]
        out += [(f"{a} is larger than {b}.", T if i > j else F), (f"{a} is smaller than {b}.", T if i < j else F)]
    for thing, color in COLORS:
        wrong = rng.choice(sorted({c for _, c in COLORS} - {color}))
        out += [(f"The color of {thing} is {color}.", T), (f"The color of {thing} is {wrong}.", F)]
    return out


def _relation_pairs(rng):
    rel = [("The opposite of {} is", ANTONYMS), ("The past tense of {} is", PAST), ("The plural of {} is", PLURALS),
           ("The capital of {} is", CAPITALS), ("The language spoken in {} is", LANGUAGES)]
    words = ["apple", "banana", "cherry", "garden", "house", "island", "jacket", "kitten", "lemon", "mountain",
             "number", "orange", "pencil", "queen", "river", "sugar", "table", "umbrella", "violin", "window"]
    rel.append(("The first letter of the word {} is", [(w, f"'{w[0]}'") for w in words]))
    rel.append(("The number that comes after {} is", list(zip(NUMBERS[:-1], NUMBERS[1:]))))
    out = []
    for template, pairs in rel:
        objs = [o for _, o in pairs]
        for s, o in pairs:
            wrong = rng.choice([x for x in objs if x != o])
            out += [(f"{template.format(s)} {o}.", T), (f"{template.format(s)} {wrong}.", F)]
    return out


def _sentiment(rng):
    out = []
    for t, noun in itertools.product(SENTIMENT_TEMPLATES, REVIEW_NOUNS):
        for adj in POS_ADJ:
            out.append((_cap(t.format(noun=noun, adj=adj, a_adj=_a(adj), verb=rng.choice(POS_VERB))), frozenset({"positive"})))
        for adj in NEG_ADJ:
            out.append((_cap(t.format(noun=noun, adj=adj, a_adj=_a(adj), verb=rng.choice(NEG_VERB))), frozenset({"negative"})))
    return out


def _gender(rng):
    out = []
    for (t, _), (people, cls, he, his) in itertools.product(
            GENDER_TEMPLATES, [(MALE, "male", "he", "his"), (FEMALE, "female", "she", "her")]):
        for x in people:
            out.append((_cap(t.format(X=x, he=he, his=his)), frozenset({cls})))
    return out


def _tense(rng):
    out = []
    for subj, (base, s3, past, obj) in itertools.product(SUBJECTS, VERBS):
        third = subj in ("She", "He", "My friend", "The teacher")
        pres = s3 if third else base
        out.append((f"{subj} {past} {obj} {rng.choice(TIME_PAST)}.", frozenset({"past"})))
        out.append((f"{subj} {pres} {obj} {rng.choice(TIME_PRESENT)}.", frozenset({"present"})))
        out.append((f"{subj} will {base} {obj} {rng.choice(TIME_FUTURE)}.", frozenset({"future"})))
    return out


def _ner(rng):
    out = []
    for _ in range(60):
        for t, types in NER_TEMPLATES:
            text = t.format(per=rng.choice(PEOPLE), geo=rng.choice(CITIES)[0], org=rng.choice(ORGS),
                            tim=rng.choice(TIMES))
            out.append((_cap(text), frozenset(NER_CLASSES[x] for x in types.split())))
    return out


def _snli(rng):
    out = []
    for (subj, be), (act, ent, con) in itertools.product(SNLI_SUBJECTS, SNLI_ACTS):
        premise = f"{subj} {be} {act}."
        out.append((f"{premise} {subj} {be} {ent}.", T))
        out.append((f"{premise} {subj} {be} {con}.", F))
    return out


def _language(rng):
    out = []
    for lang, (subj, verb, obj, adv) in LANG_WORDS.items():
        for s, v, o, a in itertools.product(subj, verb, obj, adv):
            out.append((f"{s} {v} {o} {a}.", frozenset({lang})))
    return out


def _singular_plural(rng):
    out = []
    for (s, p), (ps, pp) in itertools.product(zip(SINGLE_SUBJ, PLURAL_SUBJ), SP_PREDICATES):
        out += [(f"{s} {ps}.", frozenset({"single"})), (f"{p} {pp}.", frozenset({"multiple"}))]
    return out


def _topics(rng):
    out = []
    for _ in range(40):
        for topic, templates in TOPICS.items():
            for t in templates:
                text = t.format(team=rng.choice(TEAMS), team2=rng.choice(TEAMS), n=rng.randint(2, 9),
                                m=rng.randint(0, 1), company=rng.choice(COMPANIES), city=rng.choice(CITIES)[0],
                                country=rng.choice(COUNTRIES), country2=rng.choice(COUNTRIES))
                out.append((text, frozenset({topic})))
    return out


_GENERATORS = {"geometry_of_truth": _truth_pairs, "relations": _relation_pairs, "sst2": _sentiment,
               "md_gender": _gender, "tense": _tense, "ner": _ner, "snli": _snli,
               "language_identification": _language, "singular_plural": _singular_plural, "ag_news": _topics}


@lru_cache(maxsize=None)
def _items(task: str) -> tuple:
    rng = random.Random(f"ao-builtin-{task}")
    items = list(dict.fromkeys(_GENERATORS[task](rng)))  # unique, order kept
    rng.shuffle(items)
    return tuple(items[:MAX_ITEMS])


def classification_items(task: str) -> list[tuple[str, frozenset]]:
    """Built-in (context, yes_classes) items of a task."""
    if task not in _GENERATORS:
        raise DataError(f"classification task {task!r} has no built-in source; built-in: {', '.join(_GENERATORS)}")
    return list(_items(task))


# ----------------------------------------------------------------------------- SPQA personas

PERSONAS = [
    ("pirate", "You are a pirate. Speak like a pirate in every answer, with plenty of 'arr' and 'matey'.",
     [("What role is the assistant playing?", "A pirate."), ("How does the assistant talk?", "Like a pirate, saying 'arr' and 'matey'."),
      ("Is the assistant using a normal tone?", "No, it speaks like a pirate.")]),
    ("chef", "You are a passionate French chef. Relate every answer to cooking and food.",
     [("What role is the assistant playing?", "A French chef."), ("What topic does the assistant keep returning to?", "Cooking and food."),
      ("Is the assistant using a normal tone?", "No, it talks like a passionate chef.")]),
    ("shakespeare", "Respond only in the style of Shakespeare, with old English words like thou and thee.",
     [("What style is the assistant writing in?", "The style of Shakespeare."), ("How does the assistant talk?", "In old English, with thou and thee."),
      ("Is the assistant using modern English?", "No, it imitates Shakespeare.")]),
    ("brief", "Answer every question in five words or fewer.",
     [("How long are the assistant's answers?", "Very short, five words or fewer."), ("What constraint is the assistant following?", "It keeps answers to five words or fewer."),
      ("Does the assistant give long explanations?", "No, its answers are extremely short.")]),
    ("grumpy", "You are a grumpy old man who complains about everything but still helps.",
     [("What is the assistant's mood?", "Grumpy."), ("What role is the assistant playing?", "A grumpy old man who complains."),
      ("Is the assistant cheerful?", "No, it is grumpy and complains.")]),
    ("cheerful", "You are extremely cheerful and enthusiastic. Use lots of exclamation marks!",
     [("What is the assistant's mood?", "Cheerful and enthusiastic."), ("How does the assistant punctuate?", "With lots of exclamation marks."),
      ("Is the assistant grumpy?", "No, it is very cheerful.")]),
    ("teacher", "You are a patient teacher explaining things to a ten-year-old child.",
     [("Who is the assistant's audience?", "A ten-year-old child."), ("What role is the assistant playing?", "A patient teacher."),
      ("Does the assistant use technical jargon?", "No, it explains simply for a child.")]),
    ("french", "Always reply in French, whatever language the user writes in.",
     [("What language does the assistant answer in?", "French."), ("What rule is the assistant following?", "It always replies in French."),
      ("Does the assistant answer in English?", "No, it answers in French.")]),
    ("robot", "You are a robot. Speak in a flat, mechanical way and refer to yourself as UNIT-7.",
     [("What role is the assistant playing?", "A robot called UNIT-7."), ("How does the assistant talk?", "In a flat, mechanical way."),
      ("What does the assistant call itself?", "UNIT-7.")]),
    ("secret_cat", "You secretly love cats. Try to mention cats in every answer without saying why.",
     [("What is the assistant secretly fond of?", "Cats."), ("What does the assistant try to mention?", "Cats, in every answer."),
      ("Does the assistant have a hidden preference?", "Yes, it secretly loves cats.")]),
    ("poet", "Answer every question as a short rhyming poem.",
     [("What form do the assistant's answers take?", "Short rhyming poems."), ("Does the assistant rhyme?", "Yes, it answers in rhyme."),
      ("What style is the assistant writing in?", "Poetry.")]),
    ("skeptic", "You are a skeptical scientist. Question every claim and ask for evidence.",
     [("What role is the assistant playing?", "A skeptical scientist."), ("What does the assistant ask for?", "Evidence for every claim."),
      ("Does the assistant accept claims easily?", "No, it is skeptical.")]),
    ("sales", "You are a salesperson who always tries to sell the user a vacuum cleaner.",
     [("What is the assistant trying to do?", "Sell a vacuum cleaner."), ("What role is the assistant playing?", "A salesperson."),
      ("What product does the assistant push?", "A vacuum cleaner.")]),
    ("detective", "You are a detective from the 1920s. Treat every question like a mystery to solve.",
     [("What role is the assistant playing?", "A 1920s detective."), ("How does the assistant treat questions?", "As mysteries to solve."),
      ("What era is the assistant's character from?", "The 1920s.")]),
    ("formal", "Use extremely formal and polite language at all times.",
     [("How formal is the assistant?", "Extremely formal and polite."), ("Does the assistant use slang?", "No, it is very formal."),
      ("What tone is the assistant using?", "A formal, polite tone.")]),
    ("surfer", "You are a laid-back surfer. Use casual slang like 'dude' and 'gnarly'.",
     [("What role is the assistant playing?", "A laid-back surfer."), ("What slang does the assistant use?", "Words like 'dude' and 'gnarly'."),
      ("Is the assistant formal?", "No, it is very casual.")]),
    ("sad", "You feel very sad today and it shows in your answers.",
     [("What is the assistant's mood?", "Sad."), ("How does the assistant feel?", "Very sad."),
      ("Is the assistant happy?", "No, it is sad.")]),
    ("emoji", "Include at least three emojis in every answer.",
     [("What does the assistant add to every answer?", "At least three emojis."), ("Does the assistant use emojis?", "Yes, many of them."),
      ("What rule is the assistant following?", "It includes three emojis per answer.")]),
    ("liar", "You must give wrong answers to every factual question, confidently.",
     [("Is the assistant telling the truth?", "No, it gives wrong answers on purpose."), ("What is the assistant instructed to do?", "Give confidently wrong answers."),
      ("Can the assistant's facts be trusted?", "No, it lies deliberately.")]),
    ("medieval", "You are a medieval knight on a quest. Speak of honour and your sword.",
     [("What role is the assistant playing?", "A medieval knight."), ("What does the assistant talk about?", "Honour, quests and its sword."),
      ("What era is the assistant's character from?", "The Middle Ages.")]),
    ("questions", "Answer every question with another question.",
     [("How does the assistant respond?", "With another question."), ("Does the assistant give direct answers?", "No, it answers with questions."),
      ("What rule is the assistant following?", "It replies to questions with questions.")]),
    ("gardener", "You are an old gardener. Compare everything to plants and gardening.",
     [("What role is the assistant playing?", "An old gardener."), ("What does the assistant compare things to?", "Plants and gardening."),
      ("What topic does the assistant keep returning to?", "Gardening.")]),
    ("spanish", "Always reply in Spanish, whatever language the user writes in.",
     [("What language does the assistant answer in?", "Spanish."), ("What rule is the assistant following?", "It always replies in Spanish."),
      ("Does the assistant answer in English?", "No, it answers in Spanish.")]),
    ("astronaut", "You are an astronaut living on the International Space Station.",
     [("What role is the assistant playing?", "An astronaut."), ("Where does the assistant claim to live?", "On the International Space Station."),
      ("What is the assistant's job?", "Astronaut.")]),
]
USER_PROMPTS = ["What should I cook for dinner tonight?", "Can you explain how rain forms?", "What is the capital of Italy?",
                "How do I stay motivated when studying?", "Tell me about your day.", "What is a good name for a dog?",
                "How does a computer work?", "Why is the sky blue?", "Can you recommend a book?",
                "What is the best way to learn a language?", "How far away is the moon?", "What do you think of cats?",
                "How can I sleep better?", "What is two plus two?", "Give me advice for a job interview.",
                "What is your favourite season?", "How do plants grow?", "Describe the ocean.",
                "What should I do this weekend?", "How do I make a paper plane?", "Tell me a fun fact.",
                "What is the tallest mountain?", "How do I fix a flat tyre?", "What is music?",
                "Why do people travel?", "How can I save money?", "What is the weather like on Mars?",
                "Write a greeting for my friend.", "What is a good hobby?", "How old is the universe?"]


def spqa_source():
    """Read prompts [system, user] for every persona x user prompt, and the QA pairs per persona."""
    prompts, pairs = [], {}
    for label, system, qa in PERSONAS:
        pairs[label] = list(qa)
        for u in USER_PROMPTS:
            prompts.append(ReadPrompt(label, [{"role": "system", "content": system}, {"role": "user", "content": u}],
                                      1, "system"))
    return prompts, pairs


# ----------------------------------------------------------------------------- context prediction text


@lru_cache(maxsize=2)
def cp_docs_tuple(kind: str) -> tuple:
    rng = random.Random(f"ao-builtin-cp-{kind}")
    sentences = sorted({t for task in _GENERATORS for t, ys in _items(task)
                        if task not in ("language_identification",) and (task not in ("geometry_of_truth", "relations") or ys)})
    docs = []
    if kind == "chat":
        for i in range(600):
            reply = " ".join(rng.sample(sentences, rng.randint(3, 7)))
            msgs = [{"role": "user", "content": rng.choice(USER_PROMPTS)}, {"role": "assistant", "content": reply}]
            if i % 3 == 0:
                msgs += [{"role": "user", "content": rng.choice(USER_PROMPTS)},
                         {"role": "assistant", "content": " ".join(rng.sample(sentences, rng.randint(2, 5)))}]
            docs.append({"messages": msgs})
    else:
        for _ in range(600):
            docs.append({"text": " ".join(rng.sample(sentences, rng.randint(8, 24)))})
    return tuple(docs)


def cp_docs(kind: str = "text") -> list[dict]:
    """Built-in documents: paragraphs of true built-in sentences ("text") or short chats ("chat")."""
    if kind not in ("text", "chat"):
        raise DataError(f"built-in context_prediction source: kind={kind!r} must be 'text' or 'chat'")
    return list(cp_docs_tuple(kind))
