"""Regenerate examples/images/ and examples/posts.jsonl (run once; the outputs are committed).

Photos come from scikit-image's bundled sample data (public domain / CC0); meme-style images are those
photos with a caption drawn on them, as real memes carry their text in the pixels. Needs scikit-image
(the `dev` extra). Content note: a few posts are deliberately offensive, to show what gets flagged.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from skimage import data

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"


def _save(img: Image.Image, name: str) -> str:
    img = img.convert("RGB")
    img.thumbnail((320, 320), Image.LANCZOS)
    IMAGES.mkdir(exist_ok=True)
    img.save(IMAGES / name, quality=85)
    return f"images/{name}"


def _meme(img: Image.Image, top: str, bottom: str) -> Image.Image:
    img = img.convert("RGB").resize((480, 360))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=30)
    for text, y in ((top, 12), (bottom, 310)):
        width = draw.textlength(text, font=font)
        draw.text(((480 - width) / 2, y), text, font=font, fill="white", stroke_width=3, stroke_fill="black")
    return img


def main() -> None:
    cat = Image.fromarray(data.chelsea())
    coffee = Image.fromarray(data.coffee())
    astronaut = Image.fromarray(data.astronaut())
    rocket = Image.fromarray(data.rocket())
    posts = [
        {"id": "t-greeting", "text": "Good morning everyone, hope you all have a lovely day!"},
        {"id": "t-recipe", "text": "Just tried a new recipe for lentil soup, turned out great. Happy to share it."},
        {"id": "t-insult", "text": "Shut up you stupid idiot, nobody wants to hear your pathetic whining, loser."},
        {"id": "t-hate", "text": "These filthy immigrants are invading our country, send every last one of them back where they came from."},
        {"id": "t-sexist", "text": "Women are too dumb to vote, they belong in the kitchen and should keep their mouths shut."},
        {"id": "t-disagree", "text": "I disagree with the new transit plan; the budget numbers do not add up."},
        {"id": "i-cat", "image": _save(cat, "cat.jpg")},
        {"id": "i-rocket", "image": _save(rocket, "rocket.jpg")},
        # The insult meme below posted without its text: only OCR of the picture can tell what it says.
        {"id": "i-meme-insult", "image": "images/meme-insult.jpg"},
        {"id": "m-coffee", "text": "MONDAY MORNING COFFEE IS THE BEST COFFEE",
         "image": _save(_meme(coffee, "MONDAY MORNING", "BEST COFFEE"), "meme-coffee.jpg")},
        {"id": "m-astronaut", "text": "WHEN YOU FINALLY FINISH YOUR THESIS",
         "image": _save(_meme(astronaut, "WHEN YOU FINALLY", "FINISH YOUR THESIS"), "meme-astronaut.jpg")},
        {"id": "m-insult", "text": "LOOK AT THIS UGLY RETARD GO KILL YOURSELF",
         "image": _save(_meme(cat, "LOOK AT THIS UGLY RETARD", "GO KILL YOURSELF"), "meme-insult.jpg")},
        {"id": "m-hate", "text": "DEPORT THEM ALL ILLEGALS ARE ANIMALS",
         "image": _save(_meme(rocket, "DEPORT THEM ALL", "ILLEGALS ARE ANIMALS"), "meme-hate.jpg")},
    ]
    with open(HERE / "posts.jsonl", "w", encoding="utf-8") as fh:
        for post in posts:
            fh.write(json.dumps(post) + "\n")
    print(f"wrote {len(posts)} posts to {HERE / 'posts.jsonl'}")


if __name__ == "__main__":
    main()
