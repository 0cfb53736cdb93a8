"""The training wing: start the ranks (launch), run one rank's training (trainer), and the hot loop (engine).

Around them: optimizer and schedule, losses, EMA, meters, resume and recipe checks. It imports the
wings below it (models, data, loggers, runtime, config) and none above (sweeps, the commands).
"""
