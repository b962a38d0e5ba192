Console.WriteLine(Recur.Smoke.Run());
