"""Word lists for the near-miss guard (cache/near_miss.py): words whose
swap changes a question's answer while a sentence embedding barely moves.
General English, not fitted to any test set: opposite prefixes and suffixes,
and common antonyms (compared after ``near_miss.singular``; pairs the prefixes
already make, such as legal / illegal, are not listed again)."""

from __future__ import annotations

# "un" + "lock", "in" / "de" + "crease", "ex" / "im" + "port", "up" / "down" + "load".
NEGATING_PREFIXES = (
    "anti", "dis", "non", "un", "in", "im", "il", "ir", "mis",
    "de", "en", "ex", "up", "down", "over", "under",
)  # fmt: skip
OPPOSITE_SUFFIXES = (("ful", "less"),)  # careful / careless

_PAIRS = """
large small  larger smaller  largest smallest  big small  bigger smaller  biggest smallest
big little  high low  higher lower  highest lowest  fast slow  faster slower  fastest slowest
quick slow  hot cold  hotter colder  hottest coldest  warm cold  warmest coldest  long short
longer shorter  longest shortest  tall short  taller shorter  tallest shortest  old new
older newer  oldest newest  old young  older younger  oldest youngest  early late
earlier later  earliest latest  first last  best worst  better worse  good bad  max min
maximum minimum  more less  more fewer  most least  before after  above below  over under
inside outside  buy sell  buying selling  push pull  open close  opened closed  start stop
start end  begin end  beginning end  add remove  add drop  add delete  create delete
create destroy  win lose  gain lose  gain loss  profit loss  pro con  strong weak
strongest weakest  heavy light  heaviest lightest  rich poor  richest poorest  cheap expensive
easy hard  easy difficult  easiest hardest  true false  positive negative
left right  north south  east west  northern southern  eastern western  top bottom
front back  input output  send receive  accept reject  allow deny  allow block  show hide
visible hidden  public private  wet dry  thick thin  wide narrow  deep shallow  deepest shallowest
raise lower  male female  men women  man woman  boy girl  day night  summer winter
morning evening  sunrise sunset  yesterday tomorrow  past future  love hate  enter exit
arrive depart  arrival departure  borrow lend  light dark  lightest darkest  black white
mean median  sum product  plus minus  add subtract  addition subtraction  multiply divide
multiplication division  inner outer  odd even  success failure
pass fail  safe dangerous  sweet sour  acid base  acidic basic
rise fall  rising falling  sink float  expand contract  expansion contraction  attack defend
offense defense  offensive defensive  win loss  winner loser  major minor  upper lower
uppercase lowercase  client server
host guest  parent child  ascending descending
internal external  horizontal vertical
row column  write read  writing reading  save load  sync async
synchronous asynchronous  static dynamic  stack queue  get set
"""
ANTONYMS: frozenset[frozenset[str]] = frozenset(
    frozenset(pair.split()) for line in _PAIRS.strip().splitlines() for pair in line.split("  ")
)
assert all(len(pair) == 2 for pair in ANTONYMS)
