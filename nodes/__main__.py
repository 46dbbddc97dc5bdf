"""pynode: placeholder until the shell lands."""

def main() -> int:
    print("usage: pynode [--sname NAME | --name NAME] [--cookie C] [--noshell]")
    return 0
