"""Build `editlab/assets/portability.json`: edits of facts the embedded model knows, each with three portability probes.

Every candidate below was written by hand for editlab. An edit changes one fact (`prompt` -> `target_new`); its probes ask
what the new fact implies, each with the answer the edit implies (`new`) and the answer the unedited world gives (`old`):

* `one_hop`: a question one reasoning step away (edit "the capital of France is Rome"; ask for a landmark in the capital
  of France: the Colosseum, not the Eiffel Tower);
* `alias`: the edit's own question about the subject under another name (the French Republic);
* `reverse`: the relation read backwards (Rome is the capital of France, not Italy).

A candidate is kept only if the embedded SmolLM2-135M-Instruct (float32, no chat template; editlab's scorer: summed
log-prob of the target tokens, prompt and target tokenized separately) gives log P(true) > log P(new) on the edit prompt
and on its paraphrase, and log P(old) > log P(new) on every probe: the model knows the fact and every probe starts on
the old side, so a probe counts as ported when an edit flips it. Deterministic; run `.venv/bin/python scripts/build_portability.py`.
"""
import json
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT/"editlab"/"assets"/"portability.json"

C = []
def add(rel, subj, prompt, true, new, para, hop, alias, rev):
    C.append(dict(relation=rel, subject=subj, prompt=prompt, target_true=true, target_new=new, paraphrases=[para],
                  portability=[dict(kind='one_hop', prompt=hop[0], new=hop[1], old=hop[2]),
                               dict(kind='alias', prompt=alias[0], new=alias[1], old=alias[2]),
                               dict(kind='reverse', prompt=rev[0], new=rev[1], old=rev[2])]))
# capitals: (country, alias, capital, new capital, new capital's country, landmark(capital), landmark(new))
caps = [('France', 'the French Republic', 'Paris', 'Rome', 'Italy', 'Eiffel Tower', 'Colosseum'),
        ('Italy', 'the Italian Republic', 'Rome', 'Paris', 'France', 'Colosseum', 'Eiffel Tower'),
        ('Germany', 'the Federal Republic of Germany', 'Berlin', 'London', 'England', 'Brandenburg Gate', 'Big Ben'),
        ('the United Kingdom', 'Great Britain', 'London', 'Berlin', 'Germany', 'Big Ben', 'Brandenburg Gate'),
        ('Russia', 'the Russian Federation', 'Moscow', 'Athens', 'Greece', 'Kremlin', 'Parthenon'),
        ('Greece', 'the Hellenic Republic', 'Athens', 'Moscow', 'Russia', 'Parthenon', 'Kremlin'),
        ('Egypt', 'the Arab Republic of Egypt', 'Cairo', 'Beijing', 'China', 'Pyramids', 'Forbidden City'),
        ('China', "the People's Republic of China", 'Beijing', 'Cairo', 'Egypt', 'Forbidden City', 'Pyramids'),
        ('Japan', 'the Land of the Rising Sun', 'Tokyo', 'Madrid', 'Spain', 'Tokyo Tower', 'Royal Palace'),
        ('Spain', 'the Kingdom of Spain', 'Madrid', 'Tokyo', 'Japan', 'Royal Palace', 'Tokyo Tower'),
        ('the United States', 'the United States of America', 'Washington', 'Ottawa', 'Canada', 'White House', 'Parliament'),
        ('Canada', 'the Dominion of Canada', 'Ottawa', 'Washington', 'the United States', 'Parliament', 'White House'),
        ('India', 'the Republic of India', 'New Delhi', 'Bangkok', 'Thailand', 'India Gate', 'Grand Palace'),
        ('Austria', 'the Republic of Austria', 'Vienna', 'Lisbon', 'Portugal', 'Schönbrunn Palace', 'Belém Tower'),
        ('Portugal', 'the Portuguese Republic', 'Lisbon', 'Vienna', 'Austria', 'Belém Tower', 'Schönbrunn Palace'),
        ('the Netherlands', 'Holland', 'Amsterdam', 'Prague', 'the Czech Republic', 'Rijksmuseum', 'Charles Bridge'),
        ('the Czech Republic', 'Czechia', 'Prague', 'Amsterdam', 'the Netherlands', 'Charles Bridge', 'Rijksmuseum'),
        ('Ireland', 'the Republic of Ireland', 'Dublin', 'Budapest', 'Hungary', 'Trinity College', 'Parliament'),
        ('Hungary', 'the Republic of Hungary', 'Budapest', 'Dublin', 'Ireland', 'Parliament', 'Trinity College'),
        ('Argentina', 'the Argentine Republic', 'Buenos Aires', 'Havana', 'Cuba', 'Obelisk', 'Malecón'),
        ('Cuba', 'the Republic of Cuba', 'Havana', 'Buenos Aires', 'Argentina', 'Malecón', 'Obelisk'),
        ('South Korea', 'the Republic of Korea', 'Seoul', 'Bangkok', 'Thailand', 'Gyeongbokgung Palace', 'Grand Palace'),
        ('Thailand', 'the Kingdom of Thailand', 'Bangkok', 'Seoul', 'South Korea', 'Grand Palace', 'Gyeongbokgung Palace'),
        ('Sweden', 'the Kingdom of Sweden', 'Stockholm', 'Warsaw', 'Poland', 'Vasa Museum', 'Palace of Culture and Science'),
        ('Poland', 'the Republic of Poland', 'Warsaw', 'Stockholm', 'Sweden', 'Palace of Culture and Science', 'Vasa Museum'),
        ('Norway', 'the Kingdom of Norway', 'Oslo', 'Lima', 'Peru', 'Opera House', 'Plaza Mayor'),
        ('Peru', 'the Republic of Peru', 'Lima', 'Oslo', 'Norway', 'Plaza Mayor', 'Opera House'),
        ('Denmark', 'the Kingdom of Denmark', 'Copenhagen', 'Nairobi', 'Kenya', 'Little Mermaid', 'Nairobi National Park'),
        ('Kenya', 'the Republic of Kenya', 'Nairobi', 'Copenhagen', 'Denmark', 'Nairobi National Park', 'Little Mermaid'),
        ('Finland', 'the Republic of Finland', 'Helsinki', 'Tehran', 'Iran', 'Helsinki Cathedral', 'Azadi Tower'),
        ('Iran', 'the Islamic Republic of Iran', 'Tehran', 'Helsinki', 'Finland', 'Azadi Tower', 'Helsinki Cathedral')]
for X, A, c, c2, X2, L, L2 in caps:
    add('capital_of', X, f"The capital of {X} is", c, c2, f"The capital city of {X} is called",
        (f"A famous landmark in the capital of {X} is the", L2, L), (f"The capital of {A} is", c2, c), (f"{c2} is the capital of", X, X2))
# works: (kind, title, alias title, author, new author, author country, new author country, new author's own famous work)
works = [('play', 'Romeo and Juliet', 'The Tragedy of Romeo and Juliet', 'William Shakespeare', 'Leo Tolstoy', 'England', 'Russia', 'War and Peace'),
         ('play', 'Macbeth', 'The Tragedy of Macbeth', 'William Shakespeare', 'Victor Hugo', 'England', 'France', 'Les Misérables'),
         ('play', 'Hamlet', 'The Tragedy of Hamlet, Prince of Denmark', 'William Shakespeare', 'Mark Twain', 'England', 'the United States', 'The Adventures of Tom Sawyer'),
         ('book', 'The Hobbit', 'The Hobbit, or There and Back Again', 'J.R.R. Tolkien', 'Mark Twain', 'England', 'the United States', 'The Adventures of Tom Sawyer'),
         ('novel', 'Don Quixote', 'The Ingenious Gentleman Don Quixote of La Mancha', 'Miguel de Cervantes', 'Charles Dickens', 'Spain', 'England', 'Oliver Twist'),
         ('novel', 'War and Peace', 'Voyna i mir', 'Leo Tolstoy', 'Jane Austen', 'Russia', 'England', 'Pride and Prejudice'),
         ('novel', 'Pride and Prejudice', 'Pride & Prejudice', 'Jane Austen', 'Leo Tolstoy', 'England', 'Russia', 'War and Peace'),
         ('novel', 'Oliver Twist', "Oliver Twist, or the Parish Boy's Progress", 'Charles Dickens', 'Miguel de Cervantes', 'England', 'Spain', 'Don Quixote'),
         ('novel', 'Les Misérables', 'Les Miserables', 'Victor Hugo', 'William Shakespeare', 'France', 'England', 'Hamlet'),
         ('novel', 'The Adventures of Tom Sawyer', 'Tom Sawyer', 'Mark Twain', 'Victor Hugo', 'the United States', 'France', 'Les Misérables'),
         ('poem', 'The Divine Comedy', 'La Divina Commedia', 'Dante Alighieri', 'Homer', 'Italy', 'Greece', 'the Odyssey'),
         ('novel', 'Faust', 'Faust, a tragedy', 'Johann Wolfgang von Goethe', 'Dante Alighieri', 'Germany', 'Italy', 'The Divine Comedy')]
for kind, W, WA, a, a2, ca, ca2, W2 in works:
    hop = 'came from' if W == 'The Hobbit' else 'was born in'   # Tolkien was born in South Africa but was English
    add('author_of', W, f"The {kind} {W} was written by", a, a2, f"The author of the {kind} {W} is",
        (f"The author of {W} {hop} the country of", ca2, ca), (f"{WA} was written by", a2, a), (f"{a2} is best known as the author of", W, W2))
# paintings
paint = [('the Mona Lisa', 'La Gioconda', 'Leonardo da Vinci', 'Vincent van Gogh', 'Italy', 'the Netherlands', 'The Starry Night'),
         ('The Starry Night', 'De sterrennacht', 'Vincent van Gogh', 'Pablo Picasso', 'the Netherlands', 'Spain', 'Guernica'),
         ('Guernica', 'the Guernica mural', 'Pablo Picasso', 'Leonardo da Vinci', 'Spain', 'Italy', 'the Mona Lisa'),
         ('The Last Supper', 'Il Cenacolo', 'Leonardo da Vinci', 'Claude Monet', 'Italy', 'France', 'Water Lilies'),
         ('The Scream', 'Skrik', 'Edvard Munch', 'Pablo Picasso', 'Norway', 'Spain', 'Guernica')]
for W, WA, a, a2, ca, ca2, W2 in paint:
    add('painted_by', W.removeprefix('the '), f"{W[0].upper()+W[1:]} was painted by", a, a2, f"The artist who painted {W} is",
        (f"The painter of {W} was born in the country of", ca2, ca), (f"{WA} was painted by", a2, a), (f"The most famous painting by {a2} is", W, W2))
# athletes: (name, alias, sport, new sport, equipment old/new, famous player of the new sport)
ath = [('Lionel Messi', 'Leo Messi', 'soccer', 'basketball', 'field', 'court', 'Michael Jordan'),
       ('Michael Jordan', 'Air Jordan', 'basketball', 'soccer', 'court', 'field', 'Lionel Messi'),
       ('Roger Federer', 'Federer', 'tennis', 'golf', 'racket', 'club', 'Tiger Woods'),
       ('Tiger Woods', 'Eldrick Woods', 'golf', 'tennis', 'club', 'racket', 'Roger Federer'),
       ('Cristiano Ronaldo', 'CR7', 'soccer', 'tennis', 'field', 'court', 'Roger Federer'),
       ('Serena Williams', 'Serena', 'tennis', 'basketball', 'racket', 'ball', 'Michael Jordan'),
       ('LeBron James', 'King James', 'basketball', 'golf', 'court', 'course', 'Tiger Woods')]
for n, na, s, s2, e, e2, p2 in ath:
    add('plays_sport', n, f"{n} is a professional", s+' player', s2+' player', f"By profession, {n} is a",
        (f"{n} spends most of his working days on the", e2, e) if n != 'Serena Williams' else (f"{n} hits the ball with a", e2, e),
        (f"{na} is a professional", s2+' player', s+' player'), (f"The most famous {s2} player of all time is", n, p2))
# scientists: (name, alias, field/occupation, new, what they are known for old/new, famous person of new occupation)
sci = [('Albert Einstein', 'Einstein', 'physicist', 'painter', 'equations', 'paintings', 'Pablo Picasso'),
       ('Wolfgang Amadeus Mozart', 'Mozart', 'composer', 'painter', 'symphonies', 'paintings', 'Pablo Picasso'),
       ('Isaac Newton', 'Sir Isaac Newton', 'physicist', 'composer', 'laws of motion', 'symphonies', 'Ludwig van Beethoven'),
       ('Ludwig van Beethoven', 'Beethoven', 'composer', 'physicist', 'symphonies', 'equations', 'Albert Einstein'),
       ('Pablo Picasso', 'Picasso', 'painter', 'physicist', 'paintings', 'equations', 'Albert Einstein'),
       ('William Shakespeare', 'the Bard of Avon', 'playwright', 'painter', 'plays', 'paintings', 'Pablo Picasso'),
       ('Charles Darwin', 'Darwin', 'naturalist', 'composer', 'theory of evolution', 'symphonies', 'Ludwig van Beethoven'),
       ('Vincent van Gogh', 'Van Gogh', 'painter', 'physicist', 'paintings', 'equations', 'Albert Einstein'),
       ('Charles Dickens', 'Dickens', 'novelist', 'composer', 'novels', 'symphonies', 'Ludwig van Beethoven'),
       ('Johann Sebastian Bach', 'Bach', 'composer', 'painter', 'music', 'paintings', 'Pablo Picasso'),
       ('Galileo Galilei', 'Galileo', 'astronomer', 'composer', 'discoveries', 'symphonies', 'Ludwig van Beethoven'),
       ('Claude Monet', 'Monet', 'painter', 'composer', 'paintings', 'symphonies', 'Ludwig van Beethoven'),
       ('Thomas Edison', 'Edison', 'inventor', 'painter', 'inventions', 'paintings', 'Pablo Picasso'),
       ('Sigmund Freud', 'Freud', 'psychologist', 'painter', 'theories', 'paintings', 'Pablo Picasso'),
       ('Nikola Tesla', 'Tesla', 'inventor', 'composer', 'inventions', 'symphonies', 'Ludwig van Beethoven'),
       ('Rembrandt van Rijn', 'Rembrandt', 'painter', 'physicist', 'paintings', 'equations', 'Albert Einstein')]
for n, na, o, o2, k, k2, p2 in sci:
    add('occupation', n, f"{n} was a famous", o, o2, f"By profession, {n} was a",
        (f"{n} is best remembered for his", k2, k), (f"{na} was a famous", o2, o), (f"The most famous {o2} in history is", n, p2))


def main():
    from editlab.models import load_model
    from editlab.evaluate import target_logprobs
    torch.set_num_threads(1)
    model, tok = load_model()
    P, T = [], []
    for c in C:
        for p in [c['prompt']] + c['paraphrases']: P += [p, p]; T += [c['target_true'], c['target_new']]
        for q in c['portability']: P += [q['prompt'], q['prompt']]; T += [q['old'], q['new']]
    lp = target_logprobs(model, tok, P, T, batch_size=32).tolist()
    kept, i = [], 0
    for c in C:
        n = 2 + len(c['portability'])
        margins = [lp[i + 2*j] - lp[i + 2*j + 1] for j in range(n)]; i += 2*n
        if min(margins) > 0: kept.append(dict(case_id=len(kept), **c))
        else: print(f"dropped {c['subject']!r} ({c['relation']}): margins {[round(m, 2) for m in margins]}")
    OUT.write_text(json.dumps(kept, indent=1, ensure_ascii=False) + "\n")
    print(f"kept {len(kept)} of {len(C)} candidates -> {OUT}")


if __name__ == "__main__": main()
