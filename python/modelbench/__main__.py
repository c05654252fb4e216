"""``python -m modelbench serve ...``"""

from modelbench.cli import main

main()
