"""The /ui web page (status, live throughput, chat playground) served by server and gateway."""
