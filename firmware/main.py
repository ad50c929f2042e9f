# The sensor: otaboot.py picks the firmware version (the factory one or an
# update's) by putting its slot first on sys.path; hushlight.app runs it.
import otaboot

del otaboot  # (its work is done; the loader leaves the heap)
from hushlight import app  # noqa: E402

app.main()
