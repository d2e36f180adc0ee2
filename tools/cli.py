def main(argv=None):
    print("omnienc")
