"""Stand-in for pip's get-pip.py, which ansible-test downloads from a host this machine
cannot reach (only PyPI is reachable). ansible-test runs it inside a new sanity virtualenv
with pip's install arguments (the pinned pip, setuptools, wheel); this bootstraps pip with
the interpreter's own ensurepip and installs those pins from PyPI.
`make sanity` copies it to ~/.ansible/test/cache/get_pip_<version>.py."""
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"],
                      stdout=subprocess.DEVNULL)
# get-pip.py's own flags (not pip's): ensurepip installed no setuptools or wheel to drop.
args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--upgrade", *args]))
