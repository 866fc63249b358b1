"""Which complexity level (model tier) answers a query.

mode "simple", "moderate" or "complex" is used as given. mode "auto" applies this
heuristic, cheap and predictable on purpose (it runs before every query):

- complex  when the query has more than 60 words, contains a code block (```), or uses a
  word asking for analysis or design (analyze, compare, prove, derive, design, architecture,
  trade-off, optimize, debug, refactor, step by step, in depth/detail, pros and cons);
- moderate when it has more than 15 words, more than one question, or asks for an
  explanation, summary or piece of writing (explain, why, how, summarize, describe,
  difference, write, example, translate, list);
- simple   otherwise (short factual questions, greetings, lookups).
"""

import re

COMPLEX_WORDS = 60
MODERATE_WORDS = 15

_COMPLEX = re.compile(
    r"\b(analy[sz]e|analysis|compare|comparison|contrast|prove|proof|derive|derivation|design|"
    r"architecture|trade-?offs?|optimi[sz]e|debug|refactor|step[- ]by[- ]step|in (?:depth|detail)|"
    r"pros and cons)\b")
_MODERATE = re.compile(
    r"\b(explain|why|how|summari[sz]e|summary|describe|difference|write|example|translate|list)\b")


def classify(query: str) -> str:
    text = query.lower()
    words = len(text.split())
    if words > COMPLEX_WORDS or "```" in text or _COMPLEX.search(text):
        return "complex"
    if words > MODERATE_WORDS or text.count("?") > 1 or _MODERATE.search(text):
        return "moderate"
    return "simple"


def route(query: str, mode: str = "auto") -> str:
    return classify(query) if mode == "auto" else mode
