"""Runtime hook of the one-file build: puts ``metadata.zip`` (every dist-info, see roost.spec) on ``sys.path``.

importlib.metadata finds distributions in zip files on ``sys.path`` as in directories, so the
version, entry points (``roost.connectors`` ...) and licence files stay available, while the
bootloader unpacks one file instead of ~160 files and directories at each start.
"""

import os
import sys

sys.path.append(os.path.join(sys._MEIPASS, "metadata.zip"))  # type: ignore[attr-defined]
