"""Plant simulator with ground truth, served over a real OPC-UA server and MQTT publishers."""
