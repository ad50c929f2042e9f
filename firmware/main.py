# The sensor: everything lives in hushlight.app (config.json beside this file).
from hushlight import app

app.main()
