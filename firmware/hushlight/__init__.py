"""hushlight sensor firmware (MicroPython): level meter, capture, MQTT publishing."""
