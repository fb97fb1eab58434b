"""Built-in sentence generator for the demo corpus: a small templated grammar per language
(subject, verb, object, adverbial, joined clauses), so no text has to be downloaded.

Sentences are split into a train and an eval set by a stable hash of the sentence, so a corpus
built with `split="eval"` never repeats a sentence of the train corpus."""

from __future__ import annotations

import zlib

import numpy as np

SPLITS = ("train", "eval")
# One sentence in EVAL_EVERY goes to the eval split.
EVAL_EVERY = 8

_GRAMMARS: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "subject": (
            "the old man", "my little sister", "a tall woman", "the young doctor", "our teacher",
            "the farmer", "his brother", "the quiet student", "a busy baker", "the captain",
            "my neighbour", "the clever girl", "a tired driver", "the singer", "her father",
            "the children", "two sailors", "the green parrot", "a small dog", "the musicians",
        ),
        "verb": (
            "painted", "found", "carried", "opened", "bought", "cleaned", "cooked", "sold",
            "watched", "moved", "fixed", "dropped", "picked up", "brought", "kept", "took",
            "described", "liked", "wanted", "forgot",
        ),
        "object": (
            "a red box", "the heavy table", "some fresh bread", "the broken window",
            "a blue bicycle", "the kitchen door", "three yellow apples", "a paper boat",
            "the wooden chair", "an old map", "the silver key", "a cup of tea", "the garden gate",
            "a big basket", "the dirty boots", "a long letter", "the black piano", "a warm coat",
            "the tiny bottle", "a cheap guitar",
        ),
        "adverbial": (
            "in the morning", "near the river", "after dinner", "at the station", "very slowly",
            "before the storm", "on a Sunday", "with great care", "behind the house",
            "during the night", "in the village", "by the lake", "last winter", "at noon",
        ),
        "joiner": ("and then", "but", "because", "while", "so", "although"),
    },
    "fr": {
        "subject": (
            "le vieil homme", "ma petite soeur", "une grande femme", "le jeune médecin",
            "notre professeur", "le fermier", "son frère", "la boulangère", "le capitaine",
            "mon voisin", "la fille", "un chauffeur fatigué", "le chanteur", "son père",
            "les enfants", "deux marins", "le perroquet vert", "un petit chien", "les musiciens",
            "la directrice",
        ),
        "verb": (
            "a peint", "a trouvé", "a porté", "a ouvert", "a acheté", "a nettoyé", "a préparé",
            "a vendu", "a regardé", "a déplacé", "a réparé", "a laissé tomber", "a apporté",
            "a gardé", "a pris", "a décrit", "a aimé", "a voulu", "a oublié", "a caché",
        ),
        "object": (
            "une boîte rouge", "la table lourde", "du pain frais", "la fenêtre cassée",
            "un vélo bleu", "la porte de la cuisine", "trois pommes jaunes", "un bateau de papier",
            "la chaise en bois", "une vieille carte", "la clé d'argent", "une tasse de thé",
            "le portail du jardin", "un grand panier", "les bottes sales", "une longue lettre",
            "le piano noir", "un manteau chaud", "la petite bouteille", "une guitare",
        ),
        "adverbial": (
            "le matin", "près de la rivière", "après le dîner", "à la gare", "très lentement",
            "avant la tempête", "un dimanche", "avec beaucoup de soin", "derrière la maison",
            "pendant la nuit", "au village", "au bord du lac", "l'hiver dernier", "à midi",
        ),
        "joiner": ("et puis", "mais", "parce que", "pendant que", "alors", "bien que"),
    },
    "es": {
        "subject": (
            "el hombre viejo", "mi hermana pequeña", "una mujer alta", "el médico joven",
            "nuestro maestro", "el granjero", "su hermano", "la panadera", "el capitán",
            "mi vecino", "la niña lista", "un conductor cansado", "el cantante", "su padre",
            "los niños", "dos marineros", "el loro verde", "un perro pequeño", "los músicos",
            "la directora",
        ),
        "verb": (
            "pintó", "encontró", "llevó", "abrió", "compró", "limpió", "cocinó", "vendió",
            "miró", "movió", "arregló", "dejó caer", "trajo", "guardó", "tomó", "describió",
            "buscó", "quiso", "olvidó", "escondió",
        ),
        "object": (
            "una caja roja", "la mesa pesada", "pan fresco", "la ventana rota",
            "una bicicleta azul", "la puerta de la cocina", "tres manzanas amarillas",
            "un barco de papel", "la silla de madera", "un mapa viejo", "la llave de plata",
            "una taza de té", "la puerta del jardín", "una cesta grande", "las botas sucias",
            "una carta larga", "el piano negro", "un abrigo caliente", "la botella pequeña",
            "una guitarra barata",
        ),
        "adverbial": (
            "por la mañana", "cerca del río", "después de cenar", "en la estación",
            "muy despacio", "antes de la tormenta", "un domingo", "con mucho cuidado",
            "detrás de la casa", "durante la noche", "en el pueblo", "junto al lago",
            "el invierno pasado", "al mediodía",
        ),
        "joiner": ("y luego", "pero", "porque", "mientras", "así que", "aunque"),
    },
    "de": {
        "subject": (
            "der alte Mann", "meine kleine Schwester", "eine große Frau", "der junge Arzt",
            "unser Lehrer", "der Bauer", "sein Bruder", "die Bäckerin", "der Kapitän",
            "mein Nachbar", "das kluge Mädchen", "ein müder Fahrer", "der Sänger", "ihr Vater",
            "die Kinder", "zwei Seeleute", "der grüne Papagei", "ein kleiner Hund",
            "die Musiker", "die Direktorin",
        ),
        "verb": (
            "malte", "fand", "trug", "öffnete", "kaufte", "putzte", "kochte", "verkaufte",
            "sah", "bewegte", "reparierte", "holte", "brachte", "behielt", "nahm", "beschrieb",
            "suchte", "wollte", "vergaß", "versteckte",
        ),
        "object": (
            "eine rote Kiste", "den schweren Tisch", "frisches Brot", "das kaputte Fenster",
            "ein blaues Fahrrad", "die Küchentür", "drei gelbe Äpfel", "ein Papierboot",
            "den Holzstuhl", "eine alte Karte", "den silbernen Schlüssel", "eine Tasse Tee",
            "das Gartentor", "einen großen Korb", "die schmutzigen Stiefel", "einen langen Brief",
            "das schwarze Klavier", "einen warmen Mantel", "die kleine Flasche",
            "eine billige Gitarre",
        ),
        "adverbial": (
            "am Morgen", "am Fluss", "nach dem Essen", "am Bahnhof", "sehr langsam",
            "vor dem Sturm", "an einem Sonntag", "mit großer Sorgfalt", "hinter dem Haus",
            "in der Nacht", "im Dorf", "am See", "im letzten Winter", "am Mittag",
        ),
        "joiner": ("und dann", "aber", "denn", "und", "also", "doch"),
    },
}  # fmt: skip

LANGUAGES = tuple(_GRAMMARS)


def sentence_split(sentence: str) -> str:
    """Split of a sentence, "train" or "eval", from a stable hash (same in every process)."""
    return "eval" if zlib.crc32(sentence.encode("utf-8")) % EVAL_EVERY == 0 else "train"


def _clause(words: dict[str, tuple[str, ...]], rng: np.random.Generator) -> str:
    parts = [str(rng.choice(words[key])) for key in ("subject", "verb", "object")]
    if rng.random() < 0.6:
        adverbial = str(rng.choice(words["adverbial"]))
        parts = [adverbial, *parts] if rng.random() < 0.3 else [*parts, adverbial]
    return " ".join(parts)


def _sentence(words: dict[str, tuple[str, ...]], num_clauses: int, rng) -> str:
    text = _clause(words, rng)
    for _ in range(num_clauses - 1):
        text += f", {rng.choice(words['joiner'])} {_clause(words, rng)}"
    return text[0].upper() + text[1:] + "."


def make_text(
    language: str, rng: np.random.Generator, *, split: str = "train", num_clauses: int = 1
) -> str:
    """One sentence of `num_clauses` clauses in `language`, drawn until it belongs to `split`."""
    if language not in _GRAMMARS:
        raise ValueError(f"no sentence grammar for language {language!r}; have {LANGUAGES}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if num_clauses < 1:
        raise ValueError(f"num_clauses must be >= 1, got {num_clauses}")
    for _ in range(1000):
        text = _sentence(_GRAMMARS[language], num_clauses, rng)
        if sentence_split(text) == split:
            return text
    raise RuntimeError(f"no {split} sentence in 1000 draws for {language}")  # p ~ 1e-58
