"""``python -m modelbench serve ...``"""

from modelbench.cli.main import main

main()
