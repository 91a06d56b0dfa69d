"""Run Autobahn|Testsuite's ``wstest`` from a ``pip install --prefix`` tree (Python 2.7).

Usage: python2.7 run_wstest.py SITE_PACKAGES_DIR wstest-arguments...

``site.addsitedir`` (not PYTHONPATH) is needed so the ``.pth`` files of namespace packages such
as ``zope.interface`` are processed. Kept Python 2 compatible on purpose.
"""

import site
import sys


def main():
    site.addsitedir(sys.argv[1])
    del sys.argv[1]
    sys.argv[0] = "wstest"
    from autobahntestsuite.wstest import run

    run()


if __name__ == "__main__":
    main()
