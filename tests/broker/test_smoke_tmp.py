import sys
def test_x():
    print({k: getattr(v, "__file__", None) for k, v in sys.modules.items() if k.startswith("broker") or k == "conftest"})
    print(sys.path[:4])
