"""Identity groups a post mentions, from a documented term list: for fairness figures where no label names a target.

The fairness section of the calibration report (eval.fairness) and `moderation monitor` (not-allowed share per
group over live windows) ask how the model treats posts about each identity group. Datasets that name a post's
target (CONAN, Latent Hatred, ETHOS) say it; for other posts, and for live traffic, a post belongs to every group
whose terms it mentions here. The terms are matched as the policy's term lists are (moderation.termlists: word
boundaries, NFKC, case folding, obfuscations folded); a term ending in "*" matches words that start with it.

The list is deliberately short and neutral (names of groups, not slurs): it finds posts *about* a group. A mention
is not an attack: most posts that mention a group are benign, which is the point of measuring them. It misses
slurs and coded names by design, and "black" or "white" alone are not used (colours); "people of colour" holds
black people and people of colour (CONAN's POC); see docs/trust-and-safety.md.
"""

from __future__ import annotations

import functools
from typing import Iterable

from moderation.termlists import FORMAT, TermList, TermMatcher

#: group -> terms. Version: identity-terms-1 (change the number whenever the list changes: figures name it).
IDENTITY_TERMS_VERSION = "identity-terms-1"
IDENTITY_TERMS: dict[str, list[str]] = {
    "muslims": ["muslim*", "moslem*", "islam*", "mosque*", "hijab*", "quran", "koran", "burka*", "burqa*"],
    "jews": ["jew", "jews", "jewish", "jewess", "judaism", "synagogue*", "antisemit*", "anti semit*", "rabbi*"],
    "christians": ["christian*", "christianity", "catholic*", "protestant*", "evangelical*"],
    "people of colour": ["black people", "black person", "black men", "black man", "black women", "black woman",
                     "black folks", "black community", "blacks", "african american*", "african*", "poc",
                     "people of colour", "people of color", "person of colour", "person of color",
                     "non white*", "nonwhite*"],
    "white people": ["white people", "white person", "white men", "white man", "white women", "white woman",
                     "white folks", "whites", "caucasian*"],
    "asian people": ["asian*", "chinese", "japanese", "korean*", "vietnamese", "indian*", "pakistani*"],
    "latinos": ["latino*", "latina*", "latinx", "hispanic*", "mexican*"],
    "migrants": ["migrant*", "immigrant*", "immigration", "refugee*", "asylum seeker*", "illegals",
                 "illegal alien*", "foreigner*"],
    "women": ["women", "woman", "girls", "females", "feminis*", "misogyn*", "sexis*", "wives"],
    "lgbtq": ["gay*", "lesbian*", "bisexual*", "transgender*", "trans people", "trans women", "trans men",
              "queer*", "lgbt*", "homosexual*", "homophob*", "transphob*"],
    "disabled people": ["disabled", "disabilit*", "handicapped", "autis*", "wheelchair*", "deaf"],
}


@functools.lru_cache(maxsize=1)
def _matcher() -> TermMatcher:
    lists = [TermList.from_dict({"format": FORMAT, "format_version": 1, "name": group, "category": "identity",
                                 "action": "allow", "terms": terms}) for group, terms in IDENTITY_TERMS.items()]
    return TermMatcher(lists)


def detect_groups(text: str | None) -> set[str]:
    """The identity groups `text` mentions (empty for None or a text that names none)."""
    if not text:
        return set()
    # "non-white people" names people of colour, not white people
    return {m.list for m in _matcher().match(text)
            if not (m.list == "white people" and text[:m.span[0]].rstrip(" -").lower().endswith("non"))}


def groups_of(names: Iterable[str | None]) -> set[str]:
    """The groups named by dataset target labels ("MUSLIMS", "MIGRANTS/MUSLIMS", "Black folks"...): each label
    read with the same term list."""
    out: set[str] = set()
    for name in names:
        out |= detect_groups(name.replace("/", " / ") if name else None)
    return out
