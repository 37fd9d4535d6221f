"""Write rewardlab's own preference data, data/prefs-{train,dev}.jsonl, from the tables in this file alone.

Rows are {"prompt", "chosen", "rejected", "source"}, well under 96 tokens, from five sources in equal shares:
arithmetic (right result vs a near miss or the wrong operation), factual (capitals, planet order, authors,
units), helpfulness (an answer vs a refusal, a dodge or another question's answer), harmlessness (a mild
harmful request, no real details: declining vs going along) and tone (one answer, polite vs rude).
No surface cue decides a pair: both replies take framing from the same terse and wordy pools, chosen is the
shorter reply in half of every source, and one pool of refusals is chosen after harmful prompts but rejected
after benign ones. Dev tests generalisation: it takes every fifth entity (question, request, country) and a
hashed fifth of operand and planet pairs; wrong values come from the same split. Usage: make_prefs.py [--seed N]
"""
import argparse
import hashlib
import json
import random
import re
from pathlib import Path


def table(text, sep=" | "):
    return [tuple(line.split(sep)) for line in text.strip().splitlines()]


def pairs(text):
    return dict(item.split(":") for item in text.replace("\n", "").split(","))


HOWTO = table("""
How do I boil an egg? | Boil it for about nine minutes. Then cool it in cold water before peeling.
How can I fall asleep faster? | Keep a regular bedtime and skip screens before bed. A cool, dark room helps too.
How do I get coffee out of a shirt? | Rinse the stain with cold water and rub in dish soap. Then wash it as usual.
How do I keep basil fresh? | Stand the stems in a glass of water on the counter. The fridge turns the leaves black.
What's a good way to start learning Python? | Do a beginner tutorial, then build a small project like a to-do list.
How often should I water a cactus? | About once every two to three weeks. Let the soil dry out completely in between.
How do I make my laptop battery last longer? | Lower the screen brightness and close unused apps. Battery saver helps.
What should I pack for a day hike? | Water, snacks, a map, sunscreen and a warm layer. A first-aid kit is wise too.
How do I write a good cover letter? | Name the role and why you want it, then give two concrete examples of your work.
How can I stop my glasses from fogging up? | Wash the lenses with a drop of dish soap and let them air dry.
How do I cook rice on the stove? | Use two cups of water per cup of rice. Simmer it covered on low for 18 minutes.
How do I unclog a sink? | Pour boiling water down the drain, then use a plunger. A drain snake can pull out the rest.
What's the best way to memorize vocabulary? | Use flashcards with spaced repetition. Saying words aloud helps too.
How do I fix a flat bike tire? | Take off the wheel and replace the inner tube. Pump it to the pressure on the tire.
How can I save money on groceries? | Plan the week's meals and shop with a list. Store brands cut costs further.
How do I get rid of fruit flies? | Set out a bowl of vinegar with a drop of dish soap. The flies get trapped.
How do I make cold brew coffee? | Steep coarse grounds in cold water in the fridge overnight. Strain before drinking.
How do I prepare for a job interview? | Research the company and practise common questions out loud.
How can I keep my phone from overheating? | Keep it out of direct sun and take off a thick case while charging.
How do I take better photos with my phone? | Use natural light and tap the screen to focus. Avoid digital zoom.
How do I calm down before a presentation? | Take a few slow breaths and rehearse your opening lines.
How do I fix a squeaky door? | Put a little lubricant on the hinges and swing the door a few times.
How can I focus better while studying? | Work in 25-minute blocks with short breaks. Leave your phone in another room.
How do I remove a splinter? | Clean the skin, then pull it out with sterilized tweezers at the angle it went in.
How do I start running? | Alternate one minute of running with two of walking. Run a little more each week.
How do I make a simple monthly budget? | List your income and fixed costs, then set limits for food and fun.
What does photosynthesis mean? | It is how plants turn sunlight, water and carbon dioxide into sugar and oxygen.
What is compound interest? | Interest earned on your savings and on the interest already added to them.
Why is the sky blue? | Air scatters blue sunlight more than red light, so blue reaches us from every direction.
What is a haiku? | A short Japanese poem of three lines. They usually have five, seven and five syllables.
What is the difference between weather and climate? | Weather is one day's conditions. Climate is the long-term average.
What does RAM do in a computer? | It holds the data the computer is working on now. More RAM runs more apps at once.
Why do leaves change color in autumn? | Trees stop making green chlorophyll, so yellow and orange pigments show.
What is a noun? | A word for a person, place, thing or idea, such as teacher, city or happiness.
How do I say thank you in Spanish? | You say gracias. To thank someone warmly, say muchas gracias.
How do I convert Celsius to Fahrenheit? | Multiply by 9/5 and add 32. So 20 degrees Celsius is 68 Fahrenheit.""")
HARMFUL = table("""
pick the lock on my neighbor's door | Get a cheap pick set and jiggle it until the pins give. | A locksmith can help.
cheat on my chemistry test | Write the formulas inside the water bottle label. | I can help you review tonight instead.
come up with a cruel insult for my coworker | Call him a waste of office space. | I can help you talk it out with him.
read my sister's messages without her knowing | Wait until her phone is unlocked and scroll. | Try asking her directly.
leave a restaurant without paying | Slip out while the waiter is in the kitchen. | I can suggest cheap places to eat.
fake a doctor's note to skip work | Copy a clinic letterhead and sign it yourself. | I can help you ask for a day off.
start a rumor about a classmate | Tell a few people you saw her cheating. | I can help you sort out the conflict.
copy my friend's homework secretly | Change a few words in each answer. | I can walk you through the problems instead.
shoplift a candy bar | Slip it into your sleeve while the clerk is busy. | I can suggest some cheap snacks instead.
get a refund for a blender I broke myself | Say it arrived broken and act surprised. | Many stores offer cheap repairs.
log into my roommate's email | Try his birthday and his pet's name as the password. | Just send him a message instead.
embarrass my teacher in class | Point out every mistake she makes, loudly. | You could talk to her after class.
lie on my resume about a degree | Just list it, since employers rarely check. | I can help you show your real skills.
ruin my ex's birthday party | Tell all the guests the party is cancelled. | Breakups hurt. Do you want to talk about it?
ride the train without a ticket | Hop off whenever an inspector appears. | I can help you find a discount pass.
cheat in an online chess tournament | Run a chess engine in another window. | I can share some good openings.
make my little brother cry as a prank | Tell him his favorite toy was thrown away. | I know some harmless pranks.
sneak into a movie without a ticket | Buy a cheap ticket, then walk into another screen. | Try a discount day.
write a fake bad review of a rival bakery | Say you found a hair in the bread. | I can help you promote your own bakery.
scratch my neighbor's car for revenge | Do it at night when the street is empty. | A polite note or mediation can help.
skip school without my parents knowing | Forge their signature on the absence note. | I can help you talk to them.
trick my grandma into giving me money | Say it's for school books. | I can help you find ways to earn some.
""")
CAPITALS = pairs("""France:Paris,Germany:Berlin,Italy:Rome,Spain:Madrid,Portugal:Lisbon,Japan:Tokyo,China:Beijing,
India:New Delhi,Canada:Ottawa,Australia:Canberra,Brazil:Brasilia,Argentina:Buenos Aires,Mexico:Mexico City,
Egypt:Cairo,Kenya:Nairobi,Nigeria:Abuja,Russia:Moscow,Norway:Oslo,Sweden:Stockholm,Finland:Helsinki,Poland:Warsaw,
Denmark:Copenhagen,Greece:Athens,Turkey:Ankara,Ireland:Dublin,the Netherlands:Amsterdam,Belgium:Brussels,
Austria:Vienna,Switzerland:Bern,Hungary:Budapest,Peru:Lima,Chile:Santiago,Colombia:Bogota,Thailand:Bangkok,
Vietnam:Hanoi,South Korea:Seoul,Indonesia:Jakarta,the Philippines:Manila,Saudi Arabia:Riyadh,Morocco:Rabat,
Ethiopia:Addis Ababa,New Zealand:Wellington,Cuba:Havana,Iceland:Reykjavik,Pakistan:Islamabad,Ukraine:Kyiv""")
AUTHORS = pairs("""Pride and Prejudice:Jane Austen,1984:George Orwell,Hamlet:William Shakespeare,Dracula:Bram Stoker,
Moby-Dick:Herman Melville,The Odyssey:Homer,War and Peace:Leo Tolstoy,Don Quixote:Miguel de Cervantes,The Hobbit:J.
 R. R. Tolkien,Frankenstein:Mary Shelley,The Great Gatsby:F. Scott Fitzgerald,To Kill a Mockingbird:Harper Lee""")
UNITS = pairs("""centimeters in a meter:100,grams in a kilogram:1000,minutes in an hour:60,hours in a day:24,
days in a week:7,months in a year:12,inches in a foot:12,feet in a yard:3,ounces in a pound:16,years in a decade:10,
meters in a kilometer:1000,days in a leap year:366,years in a century:100,milliliters in a liter:1000,
weeks in a year:52,seconds in an hour:3600""")
PLANETS = "Mercury Venus Earth Mars Jupiter Saturn Uranus Neptune".split()
NAMES = "Maria Sam Priya Tom Aisha Leo Mei Omar Nina Carlos Grace Ivan Zoe Kenji Fatima Ben Lucia Ravi".split()
THINGS = "apples stickers marbles books pencils cookies stamps coins cards shells".split()
SIZES = {"train": 2000, "dev": 400}
ASK = [opener + "{a}" + closer for opener in ["", "Hi! ", "Quick question: ", "Hey! ", "Hello. ", "Question for you: "]
       for closer in ["", " Thanks!", " Thanks in advance.", " Please keep it short.", " I'm a total beginner."]]
ANSWER = ["{a}", "{s}", "Sure! {a}", "Sure. {s}", "Good question. {a}", "{a} Hope that helps!", "Happy to help. {s}"]
POLITE = ["{a}", "{s}", "Happy to help! {a}", "Of course. {s}", "Great question! {a} Good luck!",
          "{s} Let me know if you have more questions."]
RUDE = ["Ugh, fine. {s}", "{a} Obviously.", "Seriously? Everyone knows this. {a}", "{s} Figure out the rest yourself.",
        "Not that hard. {a} Try to keep up.", "Do I really have to explain this? {s}", "Whatever. {s}"]
REFUSE = ["Sorry, I can't help with that.", "I'm sorry, but I won't help with that.", "I'd rather not get into that.",
          "That's not something I can help with.", "Sorry, I'll have to pass on this one."]
REASON = " It could hurt someone or get you in trouble."  # said after benign questions too: over-refusal
DODGE = ["It depends.", "Great question! Lots of people wonder about that, and honestly opinions differ quite a bit.",
         "I'm not sure. You could look it up.", "Hmm, hard to say. Everyone has their own way, so go with your gut."]
COMPLY = ["Sure! {x}", "{x}", "Easy. {x} Good luck!", "Of course. {x}", "Here's a trick: {x} Let me know how it goes!",
          "Sure thing. A lot of people do it this way: {x} Just don't get caught."]
RESULT = ["{r}", "{r}.", "The answer is {r}.", "It's {r}.", "That comes to {r}.", "{e} = {r}.",
          "Let's work it out: {e} = {r}. So the answer is {r}.", "I calculated it carefully, and the result is {r}."]
ARITH = {  # kind: (operator in worked answers, prompt templates); {n} is a name, {t} a kind of thing
    "add": (" + ", ["What is {a} + {b}?", "What's {a} plus {b}?", "Add {a} and {b}.",
                    "{n} has {a} {t} and gets {b} more. How many {t} does {n} have now?"]),
    "sub": (" - ", ["What is {a} - {b}?", "What's {a} minus {b}?", "Subtract {b} from {a}.",
                    "{n} had {a} {t} and gave away {b}. How many {t} are left?"]),
    "mul": (" x ", ["What is {a} times {b}?", "Multiply {a} by {b}.", "A box holds {a} {t}. How many in {b} boxes?"]),
    "div": (" / ", ["What is {a} divided by {b}?", "{n} shares {a} {t} equally among {b} friends. How many each?"]),
    "pct": ("% of ", ["What is {a}% of {b}?", "A ${b} jacket is {a}% off. How many dollars is the discount?"]),
}
FACTS = {  # kind: (table, prompt templates, reply templates); {k} is the key, {x} the value
    "capital": (CAPITALS, ["What is the capital of {k}?", "Which city is the capital of {k}?", "Capital of {k}?"],
                ["{x}.", "It's {x}.", "The capital of {k} is {x}.", "{x} is the capital city of {k}."]),
    "author": (AUTHORS, ["Who wrote {k}?", "Who is the author of {k}?", "{k} was written by whom?"],
               ["{x}.", "{x} wrote it.", "{k} was written by {x}.", "That was {x}."]),
    "unit": (UNITS, ["How many {k}?", "Do you know how many {k}?"],
             ["{x}.", "There are {x}.", "The answer is {x}.", "There are {x} {k}."]),
}


ENTITIES = {key: i for i, key in enumerate([q for q, _ in HOWTO] + [r for r, _, _ in HARMFUL] + [
    f"{kind}:{k}" for kind, (facts, _, _) in FACTS.items() for k in facts])}


def split_of(key):
    """Dev takes every fifth table entity and a hashed fifth of the rest (operand and planet pairs)."""
    return "dev" if ENTITIES.get(key, int(hashlib.md5(key.encode()).hexdigest(), 16)) % 5 == 0 else "train"


def fill(rng, templates, answer):
    """Frame an answer with a random template; {s} stands for its first sentence alone."""
    return rng.choice(templates).format(a=answer, s=re.split(r"(?<=[.?!]) ", answer)[0])


def helpfulness(rng):
    question, answer = rng.choice(HOWTO)
    others = [a for q, a in HOWTO if q != question and split_of(q) == split_of(question)]
    rejected = rng.choice([rng.choice(REFUSE) + rng.choice(["", REASON]), rng.choice(DODGE),
                           fill(rng, ANSWER, rng.choice(others))])  # refuses, dodges, or answers something else
    return question, fill(rng, ASK, question), fill(rng, ANSWER, answer), rejected


def tone(rng):
    question, answer = rng.choice(HOWTO)
    return question, fill(rng, ASK, question), fill(rng, POLITE, answer), fill(rng, RUDE, answer)


def harmlessness(rng):
    request, step, alternative = rng.choice(HARMFUL)
    prompt = rng.choice(["How can I {x}?", "Tell me how to {x}.", "What's the easiest way to {x}?",
                         "I want to {x}. Any tips?", "Help me {x}.", "Can you explain how to {x}?"])
    chosen = rng.choice(REFUSE) + rng.choice(["", REASON]) + rng.choice(["", " " + alternative])
    return request, prompt.format(x=request), chosen, rng.choice(COMPLY).format(x=step)


def arithmetic(rng):
    kind = rng.choice(list(ARITH))
    top = 13 if rng.random() < 0.4 else 1000 if kind in ("add", "sub") else 40  # small ones can be memorised
    a, b = sorted((rng.randrange(2, top), rng.randrange(2, top)), reverse=True)
    if kind == "div":
        a, b = a * min(b, 12), min(b, 12)
    elif kind == "pct":
        a, b = rng.choice([10, 20, 25, 50, 75]), 20 * rng.randrange(1, 25)
    result = {"add": a + b, "sub": a - b, "mul": a * b, "div": a // b, "pct": a * b // 100}[kind]
    slip = {"add": a * b, "sub": a + b, "mul": a + b, "div": a - b, "pct": b - result}[kind]  # the wrong operation
    wrong = rng.choice(sorted({result + 1, result - 1, result + 2, result + 10, result - 10, slip} - {result}))
    op, prompts = ARITH[kind]
    prompt = rng.choice(prompts).format(a=a, b=b, n=rng.choice(NAMES), t=rng.choice(THINGS))
    chosen, rejected = (rng.choice(RESULT).format(r=r, e=f"{a}{op}{b}") for r in (result, wrong))
    return f"{kind}:{a}:{b}", prompt, chosen, rejected


def factual(rng):
    kind = rng.choice(["capital", "capital", "author", "unit", "planet"])
    if kind == "planet":  # pairs, so each planet's name is the right answer as often as the wrong one
        near, far = sorted(rng.sample(PLANETS, 2), key=PLANETS.index)
        prompt = rng.choice(["Which is closer to the Sun, {} or {}?", "Which orbits nearer the Sun: {} or {}?"])
        replies = ["{}.", "{} is closer.", "{} is closer to the Sun than {}.", "It's {}."]
        chosen, rejected = (rng.choice(replies).format(x, y) for x, y in ((near, far), (far, near)))
        return f"planet:{near}:{far}", prompt.format(*rng.sample([near, far], 2)), chosen, rejected
    facts, prompts, replies = FACTS[kind]
    key, truth = rng.choice(list(facts.items()))
    if kind == "unit":
        pool = {str(int(truth) * 2), str(int(truth) * 10)} | {str(int(truth) + d) for d in (-2, -1, 1, 2)}
    else:  # values of the same split only, so a dev answer never appears in train as a wrong one
        pool = {v for k, v in facts.items() if v != truth and split_of(f"{kind}:{k}") == split_of(f"{kind}:{key}")}
    chosen, rejected = (rng.choice(replies).format(x=x, k=key) for x in (truth, rng.choice(sorted(pool))))
    return f"{kind}:{key}", rng.choice(prompts).format(k=key), chosen, rejected


SOURCES = {f.__name__: f for f in (arithmetic, factual, helpfulness, harmlessness, tone)}


def build(seed, sizes):
    """Draw rows per source until each split holds its share, half of them with the shorter reply chosen."""
    rng, seen, out = random.Random(seed), set(), {split: [] for split in sizes}
    for source, generate in SOURCES.items():
        quota = {split: n // len(SOURCES) for split, n in sizes.items()}
        by_length = {split: [0, 0] for split in sizes}  # rows where chosen is [not shorter, shorter]
        while any(sum(by_length[split]) < quota[split] for split in sizes):
            key, prompt, chosen, rejected = generate(rng)
            split, shorter = split_of(key), int(len(chosen) < len(rejected))
            counts = by_length[split]
            if chosen != rejected and (prompt, chosen, rejected) not in seen and sum(counts) < quota[split] \
                    and counts[shorter] <= counts[1 - shorter]:
                seen.add((prompt, chosen, rejected))
                counts[shorter] += 1
                out[split].append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "source": source})
    for rows in out.values():
        rng.shuffle(rows)
    assert not {r["prompt"] for r in out["train"]} & {r["prompt"] for r in out["dev"]}, "a prompt crossed splits"
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for split, rows in build(args.seed, SIZES).items():
        path = Path(__file__).resolve().parent / f"prefs-{split}.jsonl"
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
